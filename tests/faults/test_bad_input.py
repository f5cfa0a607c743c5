"""The bad-input campaign (bench/bad_input.py) in a small budget against one real server process (embedded Valkey +
SQLite): no input makes the server answer 5xx or lose stored data, and representative errors say exactly what is
wrong. The campaign runs once for the module; each test reads its outcomes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faults.system import System

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bad_input  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bad_input.Campaign]:
    root = tmp_path_factory.mktemp("bad-input")
    system = System(root, f"sqlite:///{root / 'sqd.db'}")
    try:
        system.start_server()
        yield bad_input.run_campaign(system, bad_input.QUICK)
    finally:
        system.stop()


def outcome(campaign: bad_input.Campaign, label: str) -> tuple[int | None, object]:
    found = campaign.outcomes[label]
    return found.status, found.detail


def test_no_input_answers_5xx_or_loses_data(campaign):
    report = campaign.report()
    assert [t.category for t in campaign.tallies] == [
        "bus malformed", "bus oversized", "REST malformed", "REST oversized", "presets and overrides",
        "auth on write routes", "path traversal", "schemathesis"], report
    assert all(t.tried > 0 for t in campaign.tallies), report
    assert sum(t.server_errors for t in campaign.tallies) == 0, report
    assert sum(t.data_lost for t in campaign.tallies) == 0, report
    assert campaign.problems == [], report
    assert campaign.baseline_lost() == 0 and campaign.valid_lost() == 0


def test_malformed_bus_events_are_dead_lettered_with_their_decode_error(campaign):
    assert campaign.outcomes["schema_version 2"].dead_lettered
    assert outcome(campaign, "schema_version 2") == (
        None, "decode: schema_version b'2' is not supported (this build reads 1)")
    assert outcome(campaign, "step as text") == (
        None, "decode: invalid 'metrics' event: metrics.step.0: Input should be a valid integer, unable to parse "
              "string as an integer (got 'x')")
    assert outcome(campaign, "map nested 2,000 deep") == (None, "decode: field 'd' is not valid msgpack (StackError)")
    assert outcome(campaign, "launch request on ingest") == (
        None, "a 'launch' event does not belong on the ingest stream")
    # stored, these would have made every run listing answer 500 (pydantic cannot serialise 300 levels)
    assert outcome(campaign, "run config nested 300 deep") == (
        None, "run_started: config is nested deeper than 32 levels")
    assert outcome(campaign, "NaN wall_time") == (
        None, "metrics: wall_time must be a finite number of seconds since the epoch")


def test_oversized_events_are_dead_lettered_or_refused_by_the_producer(campaign):
    assert outcome(campaign, "'d' of 9 MiB junk") == (
        None, "decode: field 'd' is 9,437,184 bytes, over the 8,388,608-byte limit")
    assert campaign.outcomes["9 MiB extra field beside a valid event"].dead_lettered is False
    status, detail = outcome(campaign, "publish of an oversized event")
    assert status == bad_input.REFUSED and str(detail).endswith(
        "over the 8,388,608-byte limit; split it into smaller batches")
    assert outcome(campaign, "body over the limit, chunked") == (413, "request body exceeds 16777216 bytes")


def test_unknown_preset_and_bad_overrides_answer_422_naming_them(campaign):
    names = [p["name"] for p in campaign.http.get("/api/v1/presets").json()]
    assert outcome(campaign, "unknown preset") == (422, [{
        "loc": ["body", "preset"], "msg": f"unknown preset 'no-such-preset'; choose one of {', '.join(names)}"}])
    status, detail = outcome(campaign, "override out of range")
    assert status == 422 and detail == [{"loc": ["body", "overrides", "optim", "lr_g"],
                                         "msg": "optim.lr_g: Input should be greater than 0 (got -1)"}]
    status, detail = outcome(campaign, "overrides nested 300 deep")
    assert status == 422 and detail[0]["loc"] == ["body", "overrides"]  # type: ignore[index]
    assert detail[0]["msg"] == "Value error, nested deeper than 32 levels"  # type: ignore[index]
    # an int the bus cannot carry is refused before the run row exists (it used to stay "queued" after a 500)
    status, detail = outcome(campaign, "override beyond 64 bits")
    assert status == 422 and "Integer value out of range" in detail[0]["msg"]  # type: ignore[index]
    assert campaign.http.get("/api/v1/runs", params={"limit": 1000}).status_code == 200


def test_traversal_answers_404_without_opening_files_outside_the_store(campaign):
    assert campaign.outside_reads == 0
    assert outcome(campaign, "raw path /api/v1/runs/trav-uri/samples/..%2f..%2fetc%2fpasswd.png") == (404, "Not Found")
    assert outcome(campaign, "grid_uri '../outside/secret.png'") == (
        404, "artifact key '../outside/secret.png' is not a relative path of [A-Za-z0-9_.-] parts")
    assert outcome(campaign, "symlinked grid file") == (
        404, "runs/sym-file/samples/step-000000001.png resolves outside the artifact store (a symbolic link?); "
             "it is not served")
    assert outcome(campaign, "symlinked training log")[0] == 404
    assert outcome(campaign, "symlinked checkpoint")[0] == 404
    assert outcome(campaign, "symlink inside the store (control)")[0] == 200


def test_writes_without_a_valid_token_answer_401(campaign):
    path = "POST /api/v1/runs/auth-target/metrics"
    assert outcome(campaign, f"{path}: revoked token") == (401, "invalid or revoked token")
    assert outcome(campaign, f"{path}: no Authorization header") == (
        401, "missing bearer token (Authorization: Bearer <token>)")
    assert outcome(campaign, f"{path}: valid token in ?access_token= only")[0] == 401
    assert outcome(campaign, f"{path}: valid token")[0] == 200


def test_error_bodies_survive_what_they_echo(campaign):
    """Lone surrogates and NaN in a rejected body are echoed as valid JSON (they used to crash the 422 into a 500)."""
    status, detail = outcome(campaign, "lone surrogate in a name")
    assert status == 422 and detail == [{"type": "string_unicode", "loc": ["body", "name"], "input": "\ud800",
                                         "msg": "Input should be a valid string, unable to parse raw data as a "
                                                "unicode string"}]
    no_key = b'{"points": [{"step": 1, "value": NaN}]}'  # "Field required" echoes the whole point
    r = campaign.http.post("/api/v1/runs/bad-http/metrics", content=no_key,
                           headers={**campaign.admin, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == {"step": 1, "value": "NaN"}
    assert outcome(campaign, "rule for an unknown run") == (
        422, [{"loc": ["body", "run_id"], "msg": "run 'no-such-run' not found"}])


def test_server_still_serves_after_the_campaign(campaign):
    health = httpx.get(campaign.system.base_url + "/api/v1/health", timeout=10).json()
    assert health["status"] == "ok" and health["ingest"]["running"]


@pytest.mark.postgres
def test_postgresql_refuses_nul_in_text_with_422(tmp_path, pg_database):
    """PostgreSQL cannot store NUL in text (SQLite can): the request is refused, not answered 500."""
    url, _admin = pg_database
    system = System(tmp_path, url)
    try:
        system.start_server()
        api = system.api()
        r = api.post("/runs", json={"name": "a\x00b"})
        assert r.status_code == 422 and r.json() == {"detail": [{"loc": ["request"], "msg": (
            "the database cannot store a value sent: PostgreSQL text fields cannot contain NUL (0x00) bytes")}]}
        assert api.get("/runs", params={"q": "\x00"}).status_code == 422
        assert api.post("/runs", json={"id": "fine", "name": "fine"}).status_code == 201  # nothing else is stuck
    finally:
        system.stop()
