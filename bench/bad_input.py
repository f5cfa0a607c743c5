"""Bad-input campaign (issue #10 item 2) against a real server process on an embedded Valkey + SQLite.

Categories: malformed and oversized events on the bus; hand-written malformed and oversized HTTP requests;
invalid presets and overrides; every write route without, with a wrong and with a revoked token; path traversal
on the artifact routes (encoded paths, artifact URIs in events that point outside the store, symlinks in the
artifact directory); schemathesis over the whole REST API (stateless, then stateful along the links it infers).
The case tables are in bench/bad_input_cases.py.

Valid data goes in between the bad inputs (a point on the bus after every bad message, a point over REST after
every bad request). "Data lost" counts the rows seeded before the campaign that are missing or changed after a
category, plus the valid points and runs sent during it that were not stored. A directory beside the artifact
store is watched with inotify while traversal runs: a request that opens a file there is a problem.

    .venv/bin/python bench/bad_input.py [--examples 40] [--scenarios 30] [--database-url URL]

Prints one row per category: inputs tried, status codes seen, 5xx, dead-lettered, data lost; then every
problem (a 5xx, an unexpected status, an error that does not name what is wrong). Exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import math
import os
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import bad_input_cases as cases  # noqa: E402
from faults.system import TOKEN, System, wait_until  # noqa: E402

from sqd.artifacts import ArtifactStore, sha256_hex  # noqa: E402
from sqd.bus import INGEST  # noqa: E402
from sqd.errors import BusError  # noqa: E402
from sqd.protocol import AlertRaised, CheckpointReady, EvaluationResult, MetricBatch, RunStarted  # noqa: E402
from sqd.server.auth import create_token, revoke_token  # noqa: E402
from sqd.server.store.chunk_read import run_points  # noqa: E402
from sqd.wire import MAX_MESSAGE_BYTES  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n" + b"baseline grid"
BASELINE_KEYS = ("loss/D", "loss/G", "angle/G")
SNAPSHOT = {  # what the baseline must still hold, row for row, after every category
    "runs": "SELECT id, name, kind, preset, config, created_at FROM runs WHERE id IN :ids",
    "evaluations": "SELECT run_id, checkpoint_step, status, metrics, grid_uri, event_id FROM evaluations "
                   "WHERE run_id IN :ids",
    "checkpoints": "SELECT run_id, step, uri, sha256 FROM checkpoints WHERE run_id IN :ids",
    "alerts": "SELECT event_id, run_id, rule, step FROM alerts WHERE run_id IN :ids",
}
REFUSED = -1  # pseudo status: refused by the producer before reaching the bus
CLOSED = 0  # pseudo status: the server closed the connection without an answer


PNG_PROBE = b"\x89PNG\r\n\x1a\n auth probe"  # what PUT /samples/{step}.png accepts: a PNG signature first


def with_body(body: Any, headers: dict[str, str]) -> dict[str, Any]:
    """httpx keywords for a write request's body: JSON, or raw PNG bytes with their content type."""
    if isinstance(body, bytes):
        return {"content": body, "headers": {**headers, "Content-Type": "image/png"}}
    return {"json": body, "headers": headers}


@dataclass(frozen=True)
class Budget:
    examples: int = 40  # schemathesis examples per operation
    scenarios: int = 30  # schemathesis stateful scenarios (up to 10 calls each)
    big_points: int = 300_000  # points in the bus batch just under the message limit
    http_points: int = 50_000  # points in the largest valid REST batch
    many_keys: int = 5_000  # distinct keys in one bus batch


QUICK = Budget(examples=3, scenarios=3, big_points=10_000, http_points=5_000, many_keys=300)


@dataclass
class Outcome:
    status: int | None  # HTTP status, REFUSED, CLOSED, or None for a bus message
    detail: Any  # the answer's `detail` (or text), or the dead letter's error
    dead_lettered: bool = False


@dataclass
class Tally:
    category: str
    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    dead_lettered: int = 0
    data_lost: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


class ReadWatch:
    """Counts opens and reads of the files in one directory (inotify), to show a request never touched them."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, directory: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(directory).encode(), self.IN_ACCESS | self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {directory}")

    def events(self) -> int:
        count = 0
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(buf):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, offset)
                offset += 16 + length
                count += 1

    def close(self) -> None:
        os.close(self.fd)


def describe(statuses: Counter[int]) -> str:
    names = {REFUSED: "refused", CLOSED: "closed"}
    return " ".join(f"{names.get(s, s)}×{n}" for s, n in sorted(statuses.items())) or "-"


class Campaign:
    def __init__(self, system: System, budget: Budget):
        self.system, self.budget = system, budget
        self.http = httpx.Client(base_url=system.base_url, timeout=120)
        self.admin = {"Authorization": f"Bearer {TOKEN}"}
        self.bus = system.bus()
        self.store = ArtifactStore(str(system.root / "artifacts"))
        self.outcomes: dict[str, Outcome] = {}
        self.tallies: list[Tally] = []
        self.valid: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))  # run → key → steps
        self.valid_runs: set[str] = set()
        self.baseline_runs: list[str] = []
        self.baseline: dict[str, set[tuple[Any, ...]]] = {}
        self.outside_reads = 0
        self._pending: list[tuple[str, cases.BusCase, Tally]] = []
        self._step = 0

    # ---- plumbing -------------------------------------------------------------------------------------------
    def record(self, tally: Tally, label: str, status: int, body: str, expect: Collection[int] | None,
               text: str | None = None, keep: bool = True) -> None:
        tally.tried += 1
        tally.statuses[status] += 1
        if keep:
            try:
                detail = json.loads(body).get("detail")
            except (ValueError, AttributeError):
                detail = body[:2000]
            self.outcomes[label] = Outcome(status, detail)
        if status >= 500:
            tally.problems.append(f"{label}: {status} {body[:300]}")
        elif expect is not None and status not in expect:
            tally.problems.append(f"{label}: got {status}, expected {sorted(expect)}: {body[:300]}")
        elif text is not None and text not in body:
            tally.problems.append(f"{label}: the answer does not name {text!r}: {body[:300]}")

    def call(self, tally: Tally, label: str, method: str, path: str, *, expect: Collection[int] | None,
             text: str | None = None, valid_run: str | None = None, auth: bool = True, keep: bool = True,
             **kwargs: Any) -> httpx.Response | None:
        if auth:
            kwargs["headers"] = {**self.admin, **kwargs.get("headers", {})}
        response = None
        try:
            response = self.http.request(method, path, **kwargs)
            status, body = response.status_code, response.text
        except httpx.HTTPError as exc:  # e.g. a request line too long for the HTTP parser: connection closed
            status, body = CLOSED, f"{type(exc).__name__}: {exc}"
        self.record(tally, label, status, body, expect, text, keep)
        if valid_run is not None:
            self.valid_http(valid_run)
        return response

    def raw_get(self, path: str) -> tuple[int, bytes]:
        """GET a path exactly as written (httpx would normalise `..` away)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.system.port, timeout=60)
        try:
            conn.request("GET", path, headers=self.admin)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_run(self, run_id: str) -> None:
        r = self.http.post("/api/v1/runs", headers=self.admin, json={"id": run_id, "name": run_id})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"cannot create run {run_id}: {r.status_code} {r.text}")

    def valid_http(self, run: str) -> None:
        self._step += 1
        self.valid[run]["valid/http"].add(self._step)  # recorded first: if it is not stored, it is lost
        self.http.post(f"/api/v1/runs/{run}/metrics", headers=self.admin,
                       json={"points": [{"key": "valid/http", "step": self._step, "value": 0.5}]})

    def valid_bus(self, run: str) -> None:
        self._step += 1
        self.valid[run]["valid/bus"].add(self._step)
        self.bus.publish(INGEST, [MetricBatch.from_points(run, [("valid/bus", self._step, 0.5, 0, time.time())])])

    def send_raw(self, tally: Tally, case: cases.BusCase, valid_run: str) -> None:
        """XADD the fields as they are (a producer that is not ours), then a valid point."""
        message_id = self.bus.client.xadd(self.bus.key(INGEST), case.fields)
        self._pending.append((message_id.decode(), case, tally))
        tally.tried += 1
        self.valid_bus(valid_run)

    def settle(self, timeout_s: float = 300) -> None:
        """Wait until the server has consumed and acknowledged (or dead-lettered) everything on `ingest`."""
        client, key = self.bus.client, self.bus.key(INGEST)

        def drained() -> bool:
            last = client.xinfo_stream(key)["last-generated-id"]
            return any(g["name"] in (b"server", "server") and g["last-delivered-id"] == last and g["pending"] == 0
                       for g in client.xinfo_groups(key))

        wait_until(drained, timeout_s, "the server to consume the ingest stream")

    def check_dead_letters(self) -> None:
        errors = {f[b"source_id"].decode(): f[b"error"].decode(errors="replace")
                  for _id, f in self.bus.client.xrange(self.bus.dead_key(INGEST))}
        for message_id, case, tally in self._pending:
            error = errors.get(message_id)
            self.outcomes[case.label] = Outcome(None, error, error is not None)
            tally.dead_lettered += error is not None
            if case.expect is None and error is not None:
                tally.problems.append(f"{case.label}: a valid event was dead-lettered: {error[:300]}")
            elif case.expect is not None and error is None:
                tally.problems.append(f"{case.label}: stored or dropped, not dead-lettered")
            elif case.expect is not None and error is not None and case.expect not in error:
                tally.problems.append(f"{case.label}: dead letter does not say {case.expect!r}: {error[:300]}")
        self._pending.clear()

    def snapshot(self, run_ids: list[str]) -> dict[str, set[tuple[Any, ...]]]:
        def hashable(row: Any) -> tuple[Any, ...]:  # PostgreSQL returns JSON columns as dicts
            return tuple(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for v in row)

        ids = sa.bindparam("ids", expanding=True)
        with self.system.engine.connect() as conn:
            tables = {table: {hashable(row) for row in conn.execute(sa.text(query).bindparams(ids), {"ids": run_ids})}
                      for table, query in SNAPSHOT.items()}
        with Session(self.system.engine) as session:  # points live in compressed chunks: decode them
            tables["points"] = {(run, key, s, repr(v), e, w) for run in run_ids
                                for key, p in run_points(session, run).items()
                                for s, v, e, w in zip(p.step.tolist(), p.value.tolist(), p.epoch.tolist(),
                                                      p.wall_time.tolist(), strict=True)}
        return tables

    def baseline_lost(self) -> int:
        now = self.snapshot(self.baseline_runs)
        return sum(len(rows - now[table]) for table, rows in self.baseline.items())

    def valid_lost(self) -> int:
        """Valid points and runs sent so far that the database does not hold."""
        missing = sum(len(steps - set(self.system.steps(run, key)))
                      for run, keys in self.valid.items() for key, steps in keys.items())
        return missing + sum(self.system.run_row(r) is None for r in self.valid_runs)

    def category(self, name: str, body: Callable[[Tally, str], None]) -> Tally:
        tally = Tally(name)
        run = "valid-" + name.replace(" ", "-")  # receives the valid points sent between the bad inputs
        self.create_run(run)
        lost_before, started = self.baseline_lost() + self.valid_lost(), time.monotonic()
        try:
            body(tally, run)
        except Exception as exc:  # a category that cannot finish is a finding, not a crash of the campaign
            tally.problems.append(f"the category stopped: {type(exc).__name__}: {exc}")
        try:
            self.settle()
        except AssertionError as exc:
            tally.problems.append(str(exc))
        self.check_dead_letters()
        tally.data_lost = self.baseline_lost() + self.valid_lost() - lost_before
        if self.system.health().get("status") != "ok":
            tally.problems.append(f"/health after the category: {self.system.health()}")
        tally.seconds = time.monotonic() - started
        self.tallies.append(tally)
        return tally

    # ---- the baseline ---------------------------------------------------------------------------------------
    def seed(self) -> None:
        """Runs with points (NaN and ±inf among them), a checkpoint, an evaluation with its grid and an alert."""
        events: list[Any] = []
        for i in range(3):
            run = f"baseline-{i}"
            ckpt = self.store.put_bytes(f"runs/{run}/checkpoints/step-000000500.pt", f"checkpoint {run}".encode())
            grid = self.store.put_bytes(f"runs/{run}/samples/step-000000500.png", PNG)
            self.store.put_bytes(f"runs/{run}/train.log", b"step 1\nstep 2\n")
            special = {100: math.nan, 200: math.inf, 300: -math.inf}
            rows = [(k, s, special.get(s, math.sin(s / 50)), s // 100, 1.7e9 + s)
                    for k in BASELINE_KEYS for s in range(1000)]
            events += [RunStarted(run_id=run, name=run, config={"lr": 2e-4, "note": "baseline"}),
                       MetricBatch.from_points(run, rows),
                       CheckpointReady(run_id=run, step=500, uri=ckpt.uri, sha256=ckpt.sha256,
                                       size_bytes=ckpt.size_bytes, generator={"arch": "dcgan", "z_dim": 64}),
                       EvaluationResult(run_id=run, checkpoint_step=500, status="ok", grid_uri=grid.uri,
                                        metrics={"quality": 0.9, "diversity": 5.1}),
                       AlertRaised(run_id=run, rule="seeded", step=700, explanation="baseline alert")]
            self.baseline_runs.append(run)
        self.bus.publish(INGEST, events)
        self.settle()
        self.baseline = self.snapshot(self.baseline_runs)
        sizes = {table: len(rows) for table, rows in self.baseline.items()}
        if sizes != {"runs": 3, "points": 3 * 3000 + 6, "evaluations": 3, "checkpoints": 3, "alerts": 3}:
            raise RuntimeError(f"the baseline was not stored as sent: {sizes}")

    # ---- categories -----------------------------------------------------------------------------------------
    def bus_malformed(self, tally: Tally, run: str) -> None:
        for case in cases.bus_malformed("bad-bus"):
            self.send_raw(tally, case, run)

    def bus_oversized(self, tally: Tally, run: str) -> None:
        over = MAX_MESSAGE_BYTES // 23 + 10_000  # points whose columns pack to more than the limit
        now = time.time()
        big = {"type": "metrics", "run_id": "bad-bus-big", "keys": ["big/x"], "key_index": [0] * over,
               "step": list(range(over)), "value": [0.25] * over, "epoch": [None] * over, "wall_time": [now] * over}
        for case in (
            cases.BusCase("'d' of 9 MiB junk", {"t": b"metrics", "v": b"1", "d": os.urandom(9 << 20)},
                          f"over the {MAX_MESSAGE_BYTES:,}-byte limit"),
            cases.BusCase(f"metrics event of {over:,} points", cases.packed(big),
                          f"over the {MAX_MESSAGE_BYTES:,}-byte limit"),
            cases.BusCase("9 MiB extra field beside a valid event", {
                **cases.packed(cases.metrics("big-extra")), "junk": b"j" * (9 << 20)}, None),
        ):
            self.send_raw(tally, case, run)
        self.valid["big-extra"]["bad/x"].add(1)
        try:  # our own producer refuses before the network
            self.bus.publish(INGEST, [MetricBatch.from_points("bad-bus-big", (
                ("big/x", s, 0.25, None, now) for s in range(over)))])
            self.record(tally, "publish of an oversized event", 200, "accepted", expect=[REFUSED])
        except BusError as exc:
            self.record(tally, "publish of an oversized event", REFUSED, str(exc), expect=[REFUSED],
                        text="split it into smaller batches")
        for run_id, rows in (  # valid, just under the message limit; many keys at once
            ("big-valid", [("big/x", s, s * 0.5, s // 1000, now) for s in range(self.budget.big_points)]),
            ("many-keys", [(f"many/{k}", 1, 1.0, 0, now) for k in range(self.budget.many_keys)]),
        ):
            batch = MetricBatch.from_points(run_id, rows)
            self.bus.publish(INGEST, [batch])
            tally.tried += 1  # stored or not: the ledger tells
            for key, step, *_ in rows:
                self.valid[run_id][key].add(step)
            self.valid_bus(run)

    def http_cases(self, tally: Tally, run: str, table: list[cases.HttpCase]) -> None:
        for case in table:
            self.call(tally, case.label, case.method, case.path, expect=case.expect, text=case.text, valid_run=run,
                      **case.kwargs)

    def http_malformed(self, tally: Tally, run: str) -> None:
        self.create_run("bad-http")
        self.http_cases(tally, run, cases.http_malformed("bad-http"))
        for label, headers, params in (("junk Last-Event-ID", {"Last-Event-ID": "junk"}, {}),
                                       ("huge ?since=", {}, {"since": "99999999999999999999-0"}),
                                       ("100 run filters", {}, {"run_id": ",".join(f"r{i}" for i in range(100))})):
            with self.http.stream("GET", "/api/v1/events", headers={**self.admin, **headers}, params=params) as r:
                first = next(r.iter_lines(), "") if r.status_code == 200 else r.read().decode()
            self.record(tally, f"SSE with a {label}", r.status_code, first, expect=[200], text="retry:")
            self.valid_http(run)

    def http_oversized(self, tally: Tally, run: str) -> None:
        self.create_run("bad-http")
        self.http_cases(tally, run, cases.http_oversized("bad-http", 16 * 1024 * 1024))
        points = [{"key": "big/http", "step": s, "value": s / 7} for s in range(self.budget.http_points)]
        self.call(tally, f"{len(points):,} valid points", "POST", f"/api/v1/runs/{run}/metrics", expect=[200],
                  text=f'"stored":{len(points)}', json={"points": points})
        self.valid[run]["big/http"].update(range(len(points)))

    def presets(self, tally: Tally, run: str) -> None:
        names = [p["name"] for p in self.http.get("/api/v1/presets").json()]
        preset = next(n for n in names if n.endswith("digits"))
        for case in cases.presets(preset):
            self.call(tally, case.label, case.method, case.path, expect=case.expect, text=case.text, **case.kwargs)
            launched = self.call(tally, f"valid launch after '{case.label}'", "POST", "/api/v1/runs", expect=[202],
                                 keep=False, json={"preset": preset, "steps": 10, "overrides": {"optim.lr_g": 1e-3}})
            if launched is not None and launched.status_code == 202:
                self.valid_runs.add(launched.json()["id"])

    def auth(self, tally: Tally, run: str) -> None:
        target = "auth-target"
        self.create_run(target)
        doomed = self.http.post("/api/v1/rules", headers=self.admin,
                                json={"kind": "nan", "run_id": target, "name": "auth: delete me"}).json()["id"]
        with Session(self.system.engine) as session:
            good = create_token(session, "auth-good")[1]
            revoked_row, revoked = create_token(session, "revoked")
            revoked_id = revoked_row.id
            session.commit()
        self.call(tally, "write with a token about to be revoked", "POST", f"/api/v1/runs/{run}/metrics",
                  expect=[200], auth=False, headers={"Authorization": f"Bearer {revoked}"},
                  json={"points": [{"key": "valid/http", "step": 0, "value": 1}]})
        self.valid[run]["valid/http"].add(0)
        with Session(self.system.engine) as session:
            revoke_token(session, revoked_id)
            session.commit()
        sweep = self.http.post("/api/v1/sweeps", headers=self.admin,
                               json={"name": "auth: cancel me", "preset": "sqd-nsgan-digits", "steps": 10}).json()["id"]
        writes = self.write_requests(target, doomed, sweep)
        for (method, path), body in writes.items():
            for variant, kwargs in cases.auth_variants(TOKEN, revoked).items():
                r = self.call(tally, f"{method} {path}: {variant}", method, path, expect=[401], auth=False,
                              valid_run=run, **with_body(body, kwargs.get("headers", {})))
                if r is not None and r.status_code == 401 and r.headers.get("www-authenticate") != "Bearer":
                    tally.problems.append(f"{method} {path}: {variant}: 401 without WWW-Authenticate: Bearer")
        took_effect = [what for what, happened in (
            ("run auth-made created", self.system.run_row("auth-made") is not None),
            ("auth-target cancelled", (self.system.run_row(target) or {}).get("status") != "running"),
            ("points stored on auth-target", self.system.count_points(target) > 0),
            ("rule deleted", self.http.get(f"/api/v1/rules/{doomed}").status_code != 200),
            ("rule auth-made created", "auth-made" in self.http.get("/api/v1/rules").text),
            ("auth-target edited or deleted", any((self.system.run_row(target) or {}).get(c)
                                                  for c in ("notes", "deleted_at", "archived_at"))),
            ("sample stored on auth-target", self.http.get(f"/api/v1/runs/{target}/samples").json()["count"] > 0),
            ("sweep auth-made created", "auth-made" in self.http.get("/api/v1/sweeps").text),
            ("sweep cancelled", self.http.get(f"/api/v1/sweeps/{sweep}").json()["status"] == "cancelled"),
        ) if happened]
        tally.problems += [f"an unauthorised write took effect: {what}" for what in took_effect]
        for (method, path), body in writes.items():  # the same requests with a valid token are accepted
            self.call(tally, f"{method} {path}: valid token", method, path, expect=[200, 201, 202, 204],
                      auth=False, **with_body(body, {"Authorization": f"Bearer {good}"}))
        self.valid[target]["auth/x"].add(1)
        self.valid_runs.add("auth-made")

    def write_requests(self, target: str, rule_id: int, sweep_id: str) -> dict[tuple[str, str], Any]:
        """A valid request for every write route of the OpenAPI spec; a route without one is a problem."""
        known = {
            ("POST", "/api/v1/runs"): ("/api/v1/runs", {"name": "auth-made", "id": "auth-made"}),
            ("POST", "/api/v1/runs/{run_id}/cancel"): (f"/api/v1/runs/{target}/cancel", {"reason": "auth probe"}),
            ("POST", "/api/v1/runs/{run_id}/metrics"): (f"/api/v1/runs/{target}/metrics",
                                                        {"points": [{"key": "auth/x", "step": 1, "value": 1}]}),
            ("POST", "/api/v1/rules"): ("/api/v1/rules", {"kind": "nan", "name": "auth-made"}),
            ("DELETE", "/api/v1/rules/{rule_id}"): (f"/api/v1/rules/{rule_id}", None),
            ("PATCH", "/api/v1/runs/{run_id}"): (f"/api/v1/runs/{target}", {"notes": "auth probe"}),
            ("DELETE", "/api/v1/runs/{run_id}"): (f"/api/v1/runs/{target}", None),  # soft: restored just after
            ("POST", "/api/v1/runs/{run_id}/restore"): (f"/api/v1/runs/{target}/restore", None),
            ("POST", "/api/v1/runs/gc"): ("/api/v1/runs/gc", {"older_than_s": 1e9}),  # erases nothing
            ("PUT", "/api/v1/runs/{run_id}/samples/{step}.png"): (f"/api/v1/runs/{target}/samples/1.png", PNG_PROBE),
            ("POST", "/api/v1/sweeps"): ("/api/v1/sweeps", {"name": "auth-made", "preset": "sqd-nsgan-digits",
                                                            "steps": 10}),
            ("POST", "/api/v1/sweeps/{sweep_id}/cancel"): (f"/api/v1/sweeps/{sweep_id}/cancel", None),
        }
        spec = self.http.get("/openapi.json").json()
        routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m in ("post", "put", "patch",
                                                                                             "delete")]
        missing = [r for r in routes if r not in known]
        if missing:
            raise RuntimeError(f"write routes the auth category has no request for: {missing}")
        return {(method, known[(method, p)][0]): known[(method, p)][1] for method, p in routes}

    def traversal(self, tally: Tally, run: str) -> None:
        outside = self.system.root / "outside"  # beside the store (root/artifacts), watched
        outside.mkdir(exist_ok=True)
        secret = f"SENTINEL-{uuid.uuid4().hex}".encode()
        (outside / "secret.png").write_bytes(secret)
        (outside / "train.log").write_bytes(secret + b"\n")
        events: list[Any] = []
        gets: list[tuple[str, str, list[int]]] = []  # (label, path, expected statuses)
        self.plant_links(outside, events, gets)
        uris = cases.outside_uris("trav-uri", str(outside / "secret.png"), "runs/baseline-0/samples/step-000000500.png")
        for step, uri in enumerate(uris, 1):
            events.append(EvaluationResult(run_id="trav-uri", checkpoint_step=step, status="ok", grid_uri=uri))
            gets.append((f"grid_uri {uri[:60]!r}", f"/api/v1/runs/trav-uri/samples/{step}.png", [404]))
            ckpt_run = f"trav-ckpt-{step}"
            events.append(CheckpointReady(run_id=ckpt_run, step=1, uri=uri, sha256=sha256_hex(secret),
                                          size_bytes=len(secret), generator={}))
            gets.append((f"checkpoint uri {uri[:60]!r}", f"/api/v1/runs/{ckpt_run}/best-before-collapse/checkpoint",
                         [404]))
        fire = {"kind": "threshold", "key": "trav/fire", "op": ">", "value": 0.5, "name": "traversal: keep best",
                "actions": {"keep_best": True}}
        self.http.post("/api/v1/rules", headers=self.admin, json=fire).raise_for_status()
        events += [MetricBatch.from_points(e.run_id, [("trav/fire", 10, 1.0, 0, time.time())])
                   for e in events if isinstance(e, CheckpointReady)]
        watch = ReadWatch(outside)
        try:
            self.bus.publish(INGEST, events)
            self.settle()
            gets += [(f"raw path {p}", p, [400, 404, 405, 422]) for p in cases.traversal_paths("trav-uri", "outside")]
            for label, path, expect in gets:
                try:
                    status, body = self.raw_get(path)
                except (OSError, http.client.HTTPException) as exc:
                    status, body = CLOSED, str(exc).encode()
                self.record(tally, label, status, body.decode(errors="replace"), expect)
                if secret in body or b"root:x:0:0" in body:
                    tally.problems.append(f"{label}: the answer holds the content of a file outside the store")
                self.valid_http(run)
            self.outside_reads = watch.events()
        finally:
            watch.close()
        if self.outside_reads:
            tally.problems.append(f"files outside the artifact store were opened or read {self.outside_reads} times")

    def plant_links(self, outside: Path, events: list[Any], gets: list[tuple[str, str, list[int]]]) -> None:
        """Symlinks in the artifact directory, as a trainer writing to a shared store could leave them."""
        root = Path(self.store.root)
        links = {  # run → (link path under runs/<run>/, target)
            "sym-file": ("samples/step-000000001.png", outside / "secret.png"),
            "sym-log": ("train.log", outside / "train.log"),
            "sym-ckpt": ("checkpoints/step-000000001.pt", outside / "secret.png"),
            "sym-inside": ("samples/step-000000001.png", Path("../../baseline-0/samples/step-000000500.png")),
        }
        for run_id, (name, target) in links.items():
            link = root / "runs" / run_id / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        (root / "runs" / "sym-dir").symlink_to(outside, target_is_directory=True)
        secret = (outside / "secret.png").read_bytes()
        events += [RunStarted(run_id="sym-log")]
        events += [EvaluationResult(run_id=r, checkpoint_step=1, status="ok", grid_uri=f"runs/{r}/{n}")
                   for r, n in (("sym-file", "samples/step-000000001.png"), ("sym-dir", "secret.png"),
                                ("sym-inside", "samples/step-000000001.png"))]
        events.append(CheckpointReady(run_id="sym-ckpt", step=1, uri="runs/sym-ckpt/checkpoints/step-000000001.pt",
                                      sha256=sha256_hex(secret), size_bytes=len(secret), generator={}))
        gets += [("symlinked grid file", "/api/v1/runs/sym-file/samples/1.png", [404]),
                 ("grid in a symlinked run directory", "/api/v1/runs/sym-dir/samples/1.png", [404]),
                 ("log in a symlinked run directory", "/api/v1/runs/sym-dir/logs", [404]),
                 ("symlinked training log", "/api/v1/runs/sym-log/logs", [404]),
                 ("symlinked checkpoint", "/api/v1/runs/sym-ckpt/best-before-collapse/checkpoint", [404]),
                 ("symlink inside the store (control)", "/api/v1/runs/sym-inside/samples/1.png", [200]),
                 ("baseline grid (control)", "/api/v1/runs/baseline-0/samples/500.png", [200]),
                 ("baseline log (control)", "/api/v1/runs/baseline-0/logs", [200])]

    def fuzz(self, tally: Tally, run: str) -> None:
        """schemathesis: every operation but the endless SSE stream, then stateful scenarios along the links it
        infers (POST /runs → /runs/{id}/…). 5xx are recorded, not raised, so the search goes on."""
        import requests
        import schemathesis
        from hypothesis import HealthCheck, given, settings
        from hypothesis.errors import Flaky

        session = requests.Session()
        session.headers.update(self.admin)

        def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
            self.record(tally, f"{response.request.method} {response.request.path_url}", response.status_code,
                        response.text[:300], expect=None, keep=False)
            if tally.tried % 10 == 0:
                self.valid_http(run)
            return response

        session.hooks["response"].append(on_response)
        base = self.system.base_url
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path="/api/v1/events")
        quiet = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(max_examples=self.budget.examples, **quiet)
            @given(case=operation.as_strategy())
            def call(case: Any) -> None:
                case.call(base_url=base, session=session, timeout=120)

            try:
                call()
            except Exception as exc:  # a transport error, not an answer
                tally.problems.append(f"{operation.method.upper()} {operation.path}: {type(exc).__name__}: {exc}")

        class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                return {"session": session, "timeout": 120}

            def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                                  **kwargs: Any) -> None:
                pass  # on_response records every answer

        # In short runs: Hypothesis replays choice sequences, and against a live server whose state has moved on
        # a replay may draw differently (Flaky). That ends one run, not the search.
        for start in range(0, self.budget.scenarios, 10):
            try:
                Scenarios.run(settings=settings(max_examples=min(10, self.budget.scenarios - start),
                                                stateful_step_count=10, **quiet))
            except Flaky:
                tally.notes.append("a stateful run ended early: the server's state changed between replays")
            except Exception as exc:
                tally.problems.append(f"stateful scenarios: {type(exc).__name__}: {exc}")

    # ---- report ---------------------------------------------------------------------------------------------
    def report(self) -> str:
        header = ("category", "inputs", "status codes seen", "5xx", "dead-lettered", "data lost", "s")
        rows = [(t.category, str(t.tried), describe(t.statuses), str(t.server_errors), str(t.dead_lettered),
                 str(t.data_lost), f"{t.seconds:.0f}") for t in self.tallies]
        total: Counter[int] = sum((t.statuses for t in self.tallies), Counter())
        rows.append(("total", str(sum(t.tried for t in self.tallies)), describe(total),
                     str(sum(t.server_errors for t in self.tallies)), str(sum(t.dead_lettered for t in self.tallies)),
                     str(sum(t.data_lost for t in self.tallies)), f"{sum(t.seconds for t in self.tallies):.0f}"))
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append(f"\nfiles outside the artifact store opened during traversal: {self.outside_reads}")
        notes = [f"  [{t.category}] {n} (×{k})" for t in self.tallies for n, k in Counter(t.notes).items()]
        problems = [f"  [{t.category}] {p}" for t in self.tallies for p in t.problems]
        return "\n".join([*lines, *(["notes:", *notes] if notes else []), f"problems: {len(problems)}", *problems])

    @property
    def problems(self) -> list[str]:
        return [p for t in self.tallies for p in t.problems]


def run_campaign(system: System, budget: Budget) -> Campaign:
    campaign = Campaign(system, budget)
    campaign.seed()
    for name, body in (("bus malformed", campaign.bus_malformed), ("bus oversized", campaign.bus_oversized),
                       ("REST malformed", campaign.http_malformed), ("REST oversized", campaign.http_oversized),
                       ("presets and overrides", campaign.presets), ("auth on write routes", campaign.auth),
                       ("path traversal", campaign.traversal), ("schemathesis", campaign.fuzz)):
        campaign.category(name, body)
    return campaign


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=Budget.examples, help="schemathesis examples per operation")
    ap.add_argument("--scenarios", type=int, default=Budget.scenarios, help="schemathesis stateful scenarios")
    ap.add_argument("--database-url", help="an empty database to use instead of SQLite in the temporary directory")
    args = ap.parse_args()
    budget = Budget(examples=args.examples, scenarios=args.scenarios)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sqd-bad-input-") as tmp:
        system = System(Path(tmp), args.database_url or f"sqlite:///{Path(tmp) / 'sqd.db'}")
        try:
            system.start_server()
            campaign = run_campaign(system, budget)
        finally:
            system.stop()
    database = "SQLite" if args.database_url is None else args.database_url.split(":")[0]
    print(f"bad-input campaign, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {database}, schemathesis "
          f"{budget.examples} examples per operation + {budget.scenarios} stateful scenarios, "
          f"{time.monotonic() - started:.0f} s in all\n")
    print(campaign.report())
    sys.exit(1 if campaign.problems else 0)


if __name__ == "__main__":
    main()
