"""GET /runs?filter=…&sort=… on SQLite and PostgreSQL: every kind of field, sorting by metrics and config values,
and the 422 that names the bad token and its position."""

from __future__ import annotations

import pytest
from server_support import AUTH

RUNS = [  # name, config, tags, metrics (key → last value), status
    ("a", {"lr": 1e-3, "loss": {"name": "hinge"}, "ema": True, "seed": 0}, ["baseline"], {"eval/fid": 40.0}, None),
    ("b", {"lr": 1e-4, "loss": {"name": "nsgan"}, "ema": False, "seed": 1}, [], {"eval/fid": 30.0}, "finished"),
    ("c", {"lr": 2e-3, "loss": {"name": "wgan"}, "seed": "s2"}, ["baseline", "x"], {"eval/fid": "NaN"}, "failed"),
    ("d", {}, [], {"accuracy": 0.9}, None),
]


@pytest.fixture
def runs(client):
    ids = {}
    for name, config, tags, metrics, end in RUNS:
        run = client.post("/api/v1/runs", json={"name": name, "config": config, "tags": tags}, headers=AUTH).json()
        ids[name] = run["id"]
        points = [{"key": k, "step": s, "value": 1000.0 if s == 0 else v} for k, v in metrics.items() for s in (0, 5)]
        client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points}, headers=AUTH)
        if end:
            client.patch(f"/api/v1/runs/{run['id']}", json={"status": end}, headers=AUTH)
    return ids


def names(client, **params):
    r = client.get("/api/v1/runs", params=params)
    assert r.status_code == 200, r.text
    return [x["name"] for x in r.json()["data"]]


@pytest.mark.parametrize(("expr", "expected"), [
    ("config.lr >= 1e-3", {"a", "c"}),
    ("config.lr >= 1e-3 and eval/fid < 50 and tag = baseline and status in (running, finished)", {"a"}),
    ("eval/fid < 50", {"a", "b"}),  # c's last value is NaN: it never matches
    ("eval/fid > 0 or metric.accuracy >= 0.9", {"a", "b", "d"}),
    ("config.loss.name = hinge", {"a"}),
    ("config.loss.name ~ GAN", {"b", "c"}),
    ("config.loss.name in (hinge, wgan)", {"a", "c"}),
    ("config.ema = true", {"a"}),
    ("config.ema = false", {"b"}),
    ("config.seed = 1", {"b"}),
    ("config.seed = s2", {"c"}),  # a string value compares as text
    ("config.missing = 1", set()),
    ("tag = baseline", {"a", "c"}),
    ("tag != baseline", {"b", "d"}),
    ("tag in (x, nothing)", {"c"}),
    ("tag not in (baseline)", {"b", "d"}),
    ("tag ~ bas", {"a", "c"}),
    ("status != running", {"b", "c"}),
    ("status = failed or (name = a and kind = external)", {"a", "c"}),
    ("preset != p1", {"a", "b", "c", "d"}),  # no preset is "not p1"
    ("name ~ A", {"a"}),
    ("step >= 5", {"a", "b", "c", "d"}),
    ("", {"a", "b", "c", "d"}),
])
def test_filters(client, runs, expr, expected):
    assert set(names(client, filter=expr)) == expected


def test_filter_combines_with_the_other_parameters(client, runs):
    assert names(client, filter="tag = baseline", status="failed") == ["c"]
    assert names(client, filter="tag = baseline", kind="launched") == []


def test_sort_by_metric_and_config_missing_last(client, runs):
    # c (last value NaN) and d (no such series) have no value: last, newest first among them
    assert names(client, sort="eval/fid") == ["b", "a", "d", "c"]
    assert names(client, sort="-eval/fid") == ["a", "b", "d", "c"]
    assert names(client, sort="config.lr") == ["b", "a", "c", "d"]
    assert names(client, sort="-config.lr") == ["c", "a", "b", "d"]
    assert names(client, sort="-config.seed, name") == ["b", "a", "c", "d"]  # numbers, then text, then missing
    assert names(client, sort="name") == ["a", "b", "c", "d"]
    assert names(client, sort="-name", limit=2) == ["d", "c"]
    assert names(client) == ["d", "c", "b", "a"]  # newest first by default


@pytest.mark.parametrize(("params", "loc", "msg", "token", "position"), [
    ({"filter": "eval/fid & 50"}, "filter", "expected an operator (=, !=, <, <=, >, >=, ~, in, not in) after "
                                            "'eval/fid' but found '&' at position 9", "&", 9),
    ({"filter": "colour = red"}, "filter", "unknown field 'colour' at position 0; use status, kind, preset, name, "
     "id, tag, sweep, step, created, config.<key>, metric.<key> or a metric key with a '/' such as eval/fid",
     "colour", 0),
    ({"filter": "status = runing"}, "filter", "unknown status 'runing' at position 9; one of queued, running, "
                                              "cancelling, finished, failed, cancelled", "runing", 9),
    ({"filter": "eval/fid < low"}, "filter", "'low' is not a number at position 11; eval/fid compares with "
                                             "numbers", "low", 11),
    ({"filter": "name < 3"}, "filter", "name takes =, !=, ~, in, not in; '<' at position 5 does not apply to it",
     "<", 5),
    ({"filter": "config. = 1"}, "filter", "'config.' names no key at position 0; write config.<key>", "config.", 0),
    ({"filter": "config.a in (x, 3)"}, "filter", "number '3' among text values at position 16; quote it to compare "
                                                 "config.a as text", "3", 16),
    ({"sort": "name, -tag"}, "sort", "'tag' cannot sort runs at position 7; sort by a field with one value per run",
     "tag", 7),
    ({"sort": "bogus"}, "sort", "unknown field 'bogus' at position 0; use status, kind, preset, name, id, tag, sweep, "
                                "step, created, config.<key>, metric.<key> or a metric key with a '/' such as eval/fid",
     "bogus", 0),
])
def test_a_bad_filter_or_sort_is_a_422_naming_token_and_position(client, runs, params, loc, msg, token, position):
    r = client.get("/api/v1/runs", params=params)
    assert r.status_code == 422
    assert r.json() == {"detail": [{"loc": ["query", loc], "msg": msg, "type": "filter_syntax", "token": token,
                                    "position": position}]}
    r = client.get("/api/v1/runs", params={"filter": "x" * 4001})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "filter"]
