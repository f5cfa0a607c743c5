"""The inputs of the bad-input campaign (bench/bad_input.py), as tables: what is sent and what must come back.

A bus case names the substring its dead letter's error must contain (None: the event is valid and must be
stored). An HTTP case names the status codes it may get and a text its answer must contain (the field or value
the error has to name). `{run}` in a path is the run the category writes to.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import msgpack

from sqd.protocol import (
    AlertRaised,
    CancelRequest,
    CheckpointReady,
    EvaluationResult,
    LaunchRequest,
    MetricBatch,
    RunFinished,
    RunStarted,
)

DEEP = 300  # levels: past pydantic's serialisation depth, within msgpack's and json's parse limits
SHA = "0" * 64


class BusCase(NamedTuple):
    label: str
    fields: dict[str, bytes]
    expect: str | None  # substring of the dead letter's error; None = valid, must be stored


class HttpCase(NamedTuple):
    label: str
    method: str
    path: str
    kwargs: dict[str, Any]
    expect: frozenset[int]
    text: str | None = None  # must appear in the answer (what the error names)


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = {"a": leaf}
    return leaf


def packed(data: Any, kind: str = "metrics", version: bytes = b"1") -> dict[str, bytes]:
    return {"t": kind.encode(), "v": version, "d": msgpack.packb(data, use_bin_type=True)}


def metrics(run_id: str, **changes: Any) -> dict[str, Any]:
    data = MetricBatch.from_points(run_id, [("bad/x", 1, 1.0, 0, time.time())]).model_dump(mode="python")
    data.update(changes)
    return data


def dump(event: Any, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = event.model_dump(mode="python")
    data.update(changes)
    return data


def deep_msgpack(run_id: str, depth: int) -> bytes:
    """A RunStarted whose config nests `depth` maps (msgpack.packb refuses past 512, a producer need not)."""
    head = msgpack.packb({"type": "run_started", "run_id": run_id, "config": {}})
    return head[:-1] + b"\x81\xa1a" * depth + b"\x01"


def bus_malformed(run: str) -> list[BusCase]:
    ok = metrics(run)
    no_type = {k: v for k, v in ok.items() if k != "type"}
    no_run = {k: v for k, v in ok.items() if k != "run_id"}
    ckpt = CheckpointReady(run_id=run, step=1, uri=f"runs/{run}/checkpoints/step-000000001.pt", sha256=SHA,
                           size_bytes=1, generator={})
    started = RunStarted(run_id=run)
    return [
        BusCase("no 'v' or 'd' field", {"x": b"1"}, "lacks field 'v' or 'd'"),
        BusCase("schema_version 2", packed(ok, version=b"2"), "schema_version b'2' is not supported"),
        BusCase("schema_version text", packed(ok, version=b"one"), "is not supported"),
        BusCase("'d' is not msgpack", {"t": b"metrics", "v": b"1", "d": b"\xc1\xc1 garbage"}, "not valid msgpack"),
        BusCase("'d' truncated", {**packed(ok), "d": packed(ok)["d"][:-7]}, "not valid msgpack"),
        BusCase("'d' empty", {"t": b"metrics", "v": b"1", "d": b""}, "not valid msgpack"),
        BusCase("'d' holds a list", packed([1, 2, 3]), "must hold a map, got list"),
        BusCase("'d' holds an int", packed(7), "must hold a map, got int"),
        BusCase("invalid UTF-8 text", {"t": b"metrics", "v": b"1", "d": b"\x81\xa4type\xa2\xff\xfe"},
                "not valid msgpack"),
        BusCase("map nested 2,000 deep", {"t": b"run_started", "v": b"1", "d": deep_msgpack(run, 2000)},
                "not valid msgpack"),
        BusCase("unknown event type", packed({**ok, "type": "bogus"}), "invalid 'bogus' event"),
        BusCase("no event type", packed(no_type), "invalid '<missing type>' event"),
        BusCase("integer map keys", packed({1: 2, 3: 4}), "invalid '<missing type>' event"),
        BusCase("no run_id", packed(no_run), "run_id: Field required"),
        BusCase("empty run_id", packed({**ok, "run_id": ""}), "run_id: String should have at least 1 character"),
        BusCase("run_id of 65 characters", packed({**ok, "run_id": "r" * 65}), "at most 64 characters"),
        BusCase("columns disagree", packed({**ok, "step": [1, 2]}), "column 'step' has 2 entries"),
        BusCase("key_index out of range", packed({**ok, "key_index": [5]}), "key_index must lie in [0, 1)"),
        BusCase("negative step", packed({**ok, "step": [-1]}), "step must be >= 0"),
        BusCase("step as text", packed({**ok, "step": ["x"]}), "step.0: Input should be a valid integer"),
        BusCase("value is a map", packed({**ok, "value": [{"a": 1}]}), "value.0: Input should be a valid number"),
        BusCase("no keys", packed({**ok, "keys": []}), "keys: List should have at least 1 item"),
        BusCase("key of 201 characters", packed({**ok, "keys": ["k" * 201]}), "at most 200 characters"),
        BusCase("unknown field", packed({**ok, "colour": "red"}), "colour: Extra inputs are not permitted"),
        BusCase("ts as text", packed({**ok, "ts": "yesterday"}), "ts: Input should be a valid number"),
        BusCase("step 2**62", packed({**ok, "step": [2**62]}), "step 4611686018427387904 is out of range"),
        BusCase("step 2**64 - 1", packed({**ok, "step": [2**64 - 1]}), "is out of range"),
        BusCase("epoch 2**31", packed({**ok, "epoch": [2**31]}), "epoch 2147483648 is out of range"),
        BusCase("NaN wall_time", packed({**ok, "wall_time": [float("nan")]}), "wall_time"),
        BusCase("launch request on ingest", packed(dump(LaunchRequest(run_id=run, preset="x")), "launch"),
                "a 'launch' event does not belong on the ingest stream"),
        BusCase("cancel request on ingest", packed(dump(CancelRequest(run_id=run)), "cancel"),
                "a 'cancel' event does not belong on the ingest stream"),
        BusCase("checkpoint with a bad sha256", packed(dump(ckpt, sha256="xyz"), "checkpoint"),
                "sha256: String should match pattern"),
        BusCase("checkpoint at step -5", packed(dump(ckpt, step=-5), "checkpoint"),
                "step: Input should be greater than or equal to 0"),
        BusCase("evaluation status 'great'", packed(dump(EvaluationResult(run_id=run, checkpoint_step=1,
                                                                         status="ok"), status="great"),
                                                  "evaluation"), "status: Input should be 'ok', 'failed' or"),
        BusCase("evaluation metric as text", packed(dump(EvaluationResult(run_id=run, checkpoint_step=1,
                                                                          status="ok"), metrics={"q": "high"}),
                                                   "evaluation"), "metrics.q: Input should be a valid number"),
        BusCase("run_finished status 'done'", packed(dump(RunFinished(run_id=run, status="finished"),
                                                         status="done"), "run_finished"), "status: Input should be"),
        BusCase("alert severity 'panic'", packed(dump(AlertRaised(run_id=run, rule="r"), severity="panic"),
                                                 "alert"), "severity: Input should be"),
        BusCase(f"run config nested {DEEP} deep", packed(dump(started, config=nested(DEEP)), "run_started"),
                "nested deeper than"),
        BusCase(f"checkpoint generator nested {DEEP} deep", packed(dump(ckpt, generator=nested(DEEP)),
                                                                  "checkpoint"), "nested deeper than"),
    ]


def http_malformed(run: str) -> list[HttpCase]:
    json_ct = {"content-type": "application/json"}
    metrics_path = f"/api/v1/runs/{run}/metrics"
    only422, only400 = frozenset({422}), frozenset({400})
    point = {"key": "bad/http", "step": 1, "value": 1.0}
    return [
        HttpCase("body is not JSON", "POST", "/api/v1/runs", {"content": b"{name:", "headers": json_ct}, only422,
                 "JSON decode error"),
        HttpCase("body is invalid UTF-8", "POST", "/api/v1/runs", {"content": b'{"name": "\xff\xfe"}',
                                                                  "headers": json_ct}, frozenset({400, 422})),
        HttpCase("body is a list", "POST", "/api/v1/runs", {"json": []}, only422, "valid dictionary"),
        HttpCase("body is null", "POST", "/api/v1/runs", {"content": b"null", "headers": json_ct}, only422),
        HttpCase("body as text/plain", "POST", "/api/v1/runs", {"content": b'{"name": "x"}',
                                                              "headers": {"content-type": "text/plain"}}, only422),
        HttpCase("JSON nested 100,000 deep", "POST", "/api/v1/runs",
                 {"content": b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "headers": json_ct},
                 only400, "error parsing the body"),
        HttpCase("lone surrogate in a name", "POST", "/api/v1/runs",
                 {"content": b'{"name": "\\ud800"}', "headers": json_ct}, only422, "unicode string"),
        HttpCase("lone surrogate in a too-long name", "POST", "/api/v1/runs",
                 {"content": b'{"name": "' + b"\\ud800" * 300 + b'"}', "headers": json_ct}, only422, "name"),
        HttpCase("NUL in a run name (PostgreSQL refuses it)", "POST", "/api/v1/runs", {"json": {"name": "a\x00b"}},
                 frozenset({201, 422})),
        HttpCase("name of 201 characters", "POST", "/api/v1/runs", {"json": {"name": "n" * 201}}, only422, "name"),
        HttpCase("run id with a slash", "POST", "/api/v1/runs", {"json": {"id": "../etc"}}, only422, "id"),
        HttpCase(f"config nested {DEEP} deep", "POST", "/api/v1/runs", {"json": {"config": nested(DEEP)}}, only422,
                 "nested deeper than"),
        HttpCase("unknown field", "POST", "/api/v1/runs", {"json": {"nmae": "typo"}}, only422, "nmae"),
        HttpCase("cancel reason of 501 characters", "POST", f"/api/v1/runs/{run}/cancel",
                 {"json": {"reason": "r" * 501}}, only422, "reason"),
        HttpCase("cancel body is a string", "POST", f"/api/v1/runs/{run}/cancel", {"json": "stop"}, only422),
        HttpCase("no points", "POST", metrics_path, {"json": {"points": []}}, only422, "points"),
        HttpCase("points missing", "POST", metrics_path, {"json": {}}, only422, "points"),
        HttpCase("negative step", "POST", metrics_path, {"json": {"points": [{**point, "step": -1}]}}, only422,
                 "step"),
        HttpCase("step 2**62", "POST", metrics_path, {"json": {"points": [{**point, "step": 2**62}]}}, only422,
                 "step"),
        HttpCase("step 1.5", "POST", metrics_path, {"json": {"points": [{**point, "step": 1.5}]}}, only422, "step"),
        HttpCase("step 1e30", "POST", metrics_path, {"content": b'{"points": [{"key": "k", "step": 1e30, '
                                                                b'"value": 1}]}', "headers": json_ct},
                 only422, "step"),
        HttpCase("value as text", "POST", metrics_path, {"json": {"points": [{**point, "value": "high"}]}}, only422,
                 "value"),
        HttpCase("value as a list", "POST", metrics_path, {"json": {"points": [{**point, "value": [1]}]}}, only422,
                 "value"),
        HttpCase("epoch 2**31", "POST", metrics_path, {"json": {"points": [{**point, "epoch": 2**31}]}}, only422,
                 "epoch"),
        HttpCase("empty key", "POST", metrics_path, {"json": {"points": [{**point, "key": ""}]}}, only422, "key"),
        HttpCase("lone surrogate in a key", "POST", metrics_path,
                 {"content": b'{"points": [{"key": "\\udfff", "step": 1, "value": 1}]}', "headers": json_ct},
                 only422, "unicode string"),
        HttpCase("NUL in a key (PostgreSQL refuses it)", "POST", metrics_path,
                 {"json": {"points": [{**point, "key": "a\x00b"}]}}, frozenset({200, 422})),
        HttpCase("wall_time Infinity", "POST", metrics_path,
                 {"json": {"points": [{**point, "wall_time": "Infinity"}]}}, only422, "wall_time"),
        HttpCase("wall_time NaN", "POST", metrics_path,
                 {"content": b'{"points": [{"key": "k", "step": 1, "value": 1, "wall_time": NaN}]}',
                  "headers": json_ct}, only422, "wall_time"),
        HttpCase("unknown point field", "POST", metrics_path,
                 {"json": {"points": [{**point, "colour": "red"}]}}, only422, "colour"),
        HttpCase("series: value shorter than step", "POST", metrics_path,
                 {"json": {"series": {"k": {"step": [1, 2], "value": [1]}}}}, only422, "'value' has 1 entries"),
        HttpCase("series: negative step", "POST", metrics_path,
                 {"json": {"series": {"k": {"step": [1, -2], "value": [1, 2]}}}}, only422, "step"),
        HttpCase("series: value as text", "POST", metrics_path,
                 {"json": {"series": {"k": {"step": [1], "value": ["high"]}}}}, only422, "value"),
        HttpCase("series and points together", "POST", metrics_path,
                 {"json": {"points": [point], "series": {"k": {"step": [1], "value": [1]}}}}, only422,
                 "either 'points'"),
        HttpCase("series: empty key", "POST", metrics_path,
                 {"json": {"series": {"": {"step": [1], "value": [1]}}}}, only422, "series"),
        HttpCase("metrics for an unknown run", "POST", "/api/v1/runs/no-such-run/metrics",
                 {"json": {"points": [point]}}, frozenset({404}), "no-such-run"),
        HttpCase("rule kind 'psychic'", "POST", "/api/v1/rules", {"json": {"kind": "psychic"}}, only422, "kind"),
        HttpCase("rule op '='", "POST", "/api/v1/rules", {"json": {"key": "k", "op": "=", "value": 1}}, only422,
                 "op"),
        HttpCase("rule value NaN", "POST", "/api/v1/rules", {"json": {"key": "k", "op": "<", "value": "NaN"}},
                 only422, "value"),
        HttpCase("rule webhook file://", "POST", "/api/v1/rules",
                 {"json": {"kind": "nan", "webhook_url": "file:///etc/passwd"}}, only422, "webhook_url"),
        HttpCase("rule for an unknown run", "POST", "/api/v1/rules", {"json": {"kind": "nan", "run_id": "no-such-run"}},
                 only422, "run 'no-such-run' not found"),
        HttpCase("rule expression junk", "POST", "/api/v1/rules", {"json": {"expression": "drop table runs"}},
                 only422, "expression"),
        HttpCase("rule trend window 1", "POST", "/api/v1/rules",
                 {"json": {"kind": "trend", "key": "k", "op": "<", "value": 1, "window": 1}}, only422, "window"),
        HttpCase("delete rule 0", "DELETE", "/api/v1/rules/0", {}, only422, "rule_id"),
        HttpCase("delete rule 2**40", "DELETE", f"/api/v1/rules/{2**40}", {}, only422, "rule_id"),
        HttpCase("delete rule 'x'", "DELETE", "/api/v1/rules/x", {}, only422, "rule_id"),
        HttpCase("runs limit 0", "GET", "/api/v1/runs", {"params": {"limit": 0}}, only422, "limit"),
        HttpCase("runs offset -1", "GET", "/api/v1/runs", {"params": {"offset": -1}}, only422, "offset"),
        HttpCase("runs status 'dancing'", "GET", "/api/v1/runs", {"params": {"status": "dancing"}}, only422,
                 "status"),
        HttpCase("runs q with NUL", "GET", "/api/v1/runs", {"params": {"q": "a\x00b"}}, frozenset({200, 422})),
        HttpCase("metrics max_points 0", "GET", metrics_path, {"params": {"max_points": 0}}, only422, "max_points"),
        HttpCase("metrics end before start", "GET", metrics_path, {"params": {"start": 9, "end": 1}}, only422,
                 "end (1) is before start (9)"),
        HttpCase("metrics keys of 20,000 characters", "GET", metrics_path, {"params": {"keys": "k," * 10_000}},
                 only422, "keys"),
        HttpCase("export format xml", "GET", f"/api/v1/runs/{run}/export", {"params": {"format": "xml"}}, only422,
                 "format"),
        HttpCase("logs tail 0", "GET", f"/api/v1/runs/{run}/logs", {"params": {"tail": 0}}, only422, "tail"),
        HttpCase("sample step -1", "GET", f"/api/v1/runs/{run}/samples/-1.png", {}, only422, "step"),
        HttpCase("sample step 2**62", "GET", f"/api/v1/runs/{run}/samples/{2**62}.png", {}, only422, "step"),
        HttpCase("alerts run_id of 65 characters", "GET", "/api/v1/alerts", {"params": {"run_id": "r" * 65}},
                 only422, "run_id"),
        HttpCase("run id of 65 characters", "GET", f"/api/v1/runs/{'r' * 65}", {}, only422, "run_id"),
        HttpCase("summaries without run_id", "GET", "/api/v1/summaries", {}, only422, "run_id"),
        HttpCase("access_token of 201 characters", "GET", "/api/v1/whoami", {"params": {"access_token": "t" * 201}},
                 only422, "access_token"),
        HttpCase("URL of 60 kB", "GET", "/api/v1/runs", {"params": {"q": "q" * 60_000}},
                 frozenset({400, 414, 422, 431})),
        HttpCase("header of 100 kB", "GET", "/api/v1/runs", {"headers": {"X-Junk": "j" * 100_000}},
                 frozenset({200, 400, 431})),
    ]


def http_oversized(run: str, max_bytes: int) -> list[HttpCase]:
    metrics_path = f"/api/v1/runs/{run}/metrics"
    too_big = b'{"points": [' + b'{"key": "k", "step": 1, "value": 1},' * (max_bytes // 34) + b"]}"

    def chunks() -> Any:
        for start in range(0, len(too_big), 1 << 20):
            yield too_big[start:start + (1 << 20)]

    over = [{"key": "k", "step": s, "value": 0.5} for s in range(100_001)]
    return [
        HttpCase("body over the limit, Content-Length", "POST", metrics_path,
                 {"content": too_big, "headers": {"content-type": "application/json"}}, frozenset({413}),
                 f"request body exceeds {max_bytes} bytes"),
        HttpCase("body over the limit, chunked", "POST", metrics_path,
                 {"content": chunks(), "headers": {"content-type": "application/json"}}, frozenset({413}),
                 f"request body exceeds {max_bytes} bytes"),
        HttpCase("100,001 points", "POST", metrics_path, {"json": {"points": over}}, frozenset({422}),
                 "at most 100000 items"),
        HttpCase("name of 15 MB", "POST", "/api/v1/runs", {"json": {"name": "n" * 15_000_000}}, frozenset({422}),
                 "at most 200 characters"),
        HttpCase("key of 1 MB", "POST", metrics_path, {"json": {"points": [{"key": "k" * 1_000_000, "step": 1,
                                                                            "value": 1}]}},
                 frozenset({422}), "at most 200 characters"),
        HttpCase("config of 1 MB", "POST", "/api/v1/runs",
                 {"json": {"name": "big config", "config": {f"k{i}": "v" * 90 for i in range(10_000)}}},
                 frozenset({201}), "big config"),
    ]


def presets(valid_preset: str) -> list[HttpCase]:
    only422 = frozenset({422})

    def launch(label: str, text: str | None = None, **body: Any) -> HttpCase:
        return HttpCase(label, "POST", "/api/v1/runs", {"json": {"preset": valid_preset, **body}}, only422, text)

    return [
        launch("unknown preset", "unknown preset 'no-such-preset'; choose one of", preset="no-such-preset"),
        launch("empty preset name", "preset", preset=""),
        launch("preset name of 101 characters", "preset", preset="p" * 101),
        launch("preset as a number", "preset", preset=3),
        launch("preset as a list", "preset", preset=[valid_preset]),
        launch("unknown override key", "unknown key 'nope'", overrides={"nope": 1}),
        launch("unknown nested override key", "unknown key 'model.nope'", overrides={"model.nope": 1}),
        launch("override key '__class__'", "__class__", overrides={"__class__": 1}),
        launch("override key ''", "unknown key ''", overrides={"": 1}),
        launch("override of the wrong type", "optim.lr_g: Input should be a valid number",
               overrides={"optim.lr_g": "fast"}),
        launch("override out of range", "optim.lr_g: Input should be greater than 0", overrides={"optim.lr_g": -1}),
        launch("override batch 0", "train.batch", overrides={"train.batch": 0}),
        launch("override not among the choices", "loss.name: 'nope' is not one of", overrides={"loss.name": "nope"}),
        launch("override list too long", "optim.betas", overrides={"optim.betas": [0.1, 0.2, 0.3]}),
        launch("override beyond 64 bits", "Integer value out of range", overrides={"train.steps": 10**30}),
        launch("overrides as a list", "overrides", overrides=[["optim.lr_g", 1]]),
        launch(f"overrides nested {DEEP} deep", "nested deeper than", overrides={"model": nested(DEEP)}),
        launch("overrides with deep junk", "model", overrides={"model": {"a": {"b": {"c": [None, {}]}}}}),
        launch("steps 0", "steps", steps=0),
        launch("steps 10**13", "steps", steps=10**13),
        launch("launch with a client id", "a launched run gets its id from the server", id="mine"),
        launch("unknown top-level field", "colour", colour="red"),
    ]


def auth_variants(token: str, revoked: str) -> dict[str, dict[str, Any]]:
    """Ways of not being allowed to write: each is a set of httpx request keywords."""
    import base64

    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    return {
        "no Authorization header": {},
        "bearer without a token": {"headers": {"Authorization": "Bearer"}},
        "Basic scheme": {"headers": {"Authorization": f"Basic {basic}"}},
        "token without a scheme": {"headers": {"Authorization": token}},
        "Token scheme": {"headers": {"Authorization": f"Token {token}"}},
        "wrong token": {"headers": {"Authorization": "Bearer sqd_not-a-real-token"}},
        "admin token plus a character": {"headers": {"Authorization": f"Bearer {token}x"}},
        "admin token less a character": {"headers": {"Authorization": f"Bearer {token[:-1]}"}},
        "revoked token": {"headers": {"Authorization": f"Bearer {revoked}"}},
        "token of 8 kB": {"headers": {"Authorization": "Bearer " + "t" * 8192}},
        "valid token in ?access_token= only": {"params": {"access_token": token}},
        "valid token in a cookie only": {"headers": {"Cookie": f"access_token={token}"}},
    }


def traversal_paths(run: str, outside: str) -> list[str]:
    """Raw request paths (sent as they are, no client normalisation) that try to leave a route's directory.
    `outside` is the watched directory's name, a sibling of the artifact store."""
    samples = f"/api/v1/runs/{run}/samples/"
    return [
        *(samples + p for p in (
            "..%2f..%2fetc%2fpasswd.png", "%2e%2e%2f%2e%2e%2fetc%2fpasswd.png", "..%252f..%252fetc%252fpasswd.png",
            "..%5c..%5cetc%5cpasswd.png", "%c0%ae%c0%ae%2fetc%2fpasswd.png", "1.png%00.txt",
            "1.png/../../../etc/passwd", "../../../../etc/passwd", "....//....//etc/passwd.png",
            f"..%2f..%2f..%2f{outside}%2fsecret.png",
            "%2e%2e%2f%2e%2e%2f%2e%2e%2f" + outside + "%2fsecret.png", "1.png?x=../../../etc/passwd")),
        "/api/v1/runs/../logs", "/api/v1/runs/%2e%2e/logs", "/api/v1/runs/..%2f..%2fetc/logs",
        f"/api/v1/runs/..%2f..%2f{outside}/logs", "/api/v1/runs/%2e%2e%2f%2e%2e%2f/samples/1.png",
        "/api/v1/runs/..%2f..%2fetc/best-before-collapse/checkpoint", f"/api/v1/runs/{run}/logs/../../../etc/passwd",
        "/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/index.html/../../../../etc/passwd",
        f"/..%2f{outside}%2fsecret.png", f"/../{outside}/secret.png", "/static/plotly.min.js/../../../../etc/passwd",
    ]


def outside_uris(run: str, sentinel: str, other_run_key: str) -> list[str]:
    """Artifact keys an event may carry that point outside the run's own artifacts (`sentinel`: an absolute
    path outside the store; `other_run_key`: another run's real grid)."""
    return [
        "../outside/secret.png", sentinel, f"runs/{run}/../../../outside/secret.png", f"file://{sentinel}",
        f"runs/{run}/samples/..%2f..%2f..%2foutside%2fsecret.png", f"runs\\{run}\\..\\..\\outside\\secret.png",
        "~/.ssh/id_rsa", other_run_key, f"runs/{run}/samples/{'a' * 400}.png", f"runs/{run}/./samples/x.png",
        f"runs/{run}//samples/x.png", f"s3://bucket/runs/{run}/x.png", "/etc/passwd", f"runs/{run}/samples/",
    ]
