"""Scale-out, end to end: two `sqd server`s, two `sqd worker`s and two `sqd agent`s, each with a home directory of
its own as if on its own machine, share one PostgreSQL (a database of its own), one Valkey and an S3 artifact
store (moto's server on loopback). Tiny real runs train through the agents; one server and one worker are
SIGKILLed mid-run and gc runs meanwhile (and `sqd gc` at the end). Afterwards nothing is lost (every step of
every run stored, every checkpoint evaluated), nothing doubled (points, evaluations, alerts), the survivors are
healthy, and every artifact in S3 reads back with its sha256."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from s3_server import MotoServer

from faults.system import TOKEN, System, wait_until
from sqd.artifacts import ArtifactStore
from sqd.bus import CHECKPOINTS, INGEST
from sqd.embedded_redis import free_port
from sqd.server.gc import collect_garbage
from sqd.server.health import INGEST_GROUP
from sqd.settings import ArtifactSettings, Settings, WorkerSettings
from sqd.worker.loop import GROUP as WORKER_GROUP

pytestmark = pytest.mark.postgres
RUNS, STEPS, CHECKPOINT_EVERY = 4, 80, 20
GRACE_S = 10.0  # gc's grace period here; artifacts of unknown runs younger than this are kept
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Cluster(System):
    """System's Valkey and database, plus any number of servers, workers and agents, all on the S3 store."""

    store_url: str = ""
    store: ArtifactSettings = field(default_factory=ArtifactSettings)
    models_dir: Path = Path()
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "SQD_ARTIFACTS_URL": self.store_url, **self.store.env(),
                "SQD_WORKER__MODELS_DIR": str(self.models_dir), "SQD_WORKER__SAMPLES": "200"}

    def role_env(self, name: str) -> dict[str, str]:
        return {**self.env, "SQD_HOME": str(self.root / f"home-{name}")}  # nothing shared on disk

    def start_role(self, name: str, *argv: str) -> None:
        self.start(name, "-m", "sqd", *argv, env=self.role_env(name))

    def start_server_named(self, name: str) -> None:
        self.ports[name] = port = free_port()
        self.start(name, "-m", "sqd", "server", "--port", str(port),
                   env={**self.role_env(name), "SQD_SERVER__PORT": str(port)})

    def url(self, server: str) -> str:
        return f"http://127.0.0.1:{self.ports[server]}/api/v1"

    def artifacts(self) -> ArtifactStore:
        return ArtifactStore.from_settings(Settings(artifacts_url=self.store_url, artifacts=self.store))


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits profile's classifier and FID reference, made once here rather than by both workers at once."""
    from sqd.worker.digits import DigitsProfile

    models = tmp_path_factory.mktemp("models")
    DigitsProfile(Settings(worker=WorkerSettings(models_dir=models))).reference_stats(16)
    return models


@pytest.fixture
def cluster(tmp_path: Path, pg_database: tuple[str, object], moto_s3: MotoServer,
            digits_models: Path) -> Iterator[Cluster]:
    url, _admin = pg_database
    sut = Cluster(tmp_path, url, store_url=f"s3://{moto_s3.new_bucket()}/sqd", store=moto_s3.settings(),
                  models_dir=digits_models)
    yield sut
    sut.stop()


def _name(consumer_info: dict) -> str:  # type: ignore[type-arg]
    name = consumer_info["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def pending(cluster: Cluster, stream: str, group: str) -> dict[str, int]:
    """Messages each consumer of the group has read and not acknowledged, by consumer name."""
    bus = cluster.bus()
    try:
        return {_name(c): int(c["pending"]) for c in bus.client.xinfo_consumers(bus.key(stream), group)}
    finally:
        bus.close()


def kill_while_holding(cluster: Cluster, process: str, stream: str, group: str, consumer: str) -> None:
    """SIGKILL `process` at a moment its consumer holds messages it read and has not acknowledged."""
    bus = cluster.bus()
    key, deadline = bus.key(stream), time.monotonic() + 180
    try:
        while not any(_name(c) == consumer and int(c["pending"]) > 0
                      for c in bus.client.xinfo_consumers(key, group)):
            assert time.monotonic() < deadline, f"{process} never held a message of {stream}"
            time.sleep(0.002)
        cluster.kill(process)
    finally:
        bus.close()


def points_of(api: httpx.Client, run_id: str) -> list[tuple[str, int]]:
    r = api.get(f"/runs/{run_id}/export", params={"format": "csv"})
    r.raise_for_status()
    return [(row["key"], int(row["step"])) for row in csv.DictReader(io.StringIO(r.text))]


def sqd_gc(cluster: Cluster, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "sqd", "gc", "--json", *args], env=cluster.role_env("gc"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.mark.slow
def test_two_of_each_role_lose_and_double_nothing_when_a_server_and_a_worker_die(cluster: Cluster) -> None:
    started = time.monotonic()

    def phase(what: str) -> None:  # shown with a failure: where the time went
        print(f"{time.monotonic() - started:6.1f} s  {what}")

    store = cluster.artifacts()
    ghost = store.put_bytes("runs/ghost/checkpoints/step-000000001.pt", b"a run deleted long ago" * 100)
    planted_at = time.time()
    cluster.start_server_named("server-a")
    for name in ("worker-a", "worker-b"):
        cluster.start_role(name, "worker", "--name", name)
    for name in ("agent-a", "agent-b"):
        cluster.start_role(name, "agent", "--id", name)
    # server-a's ingest consumer is the group's first: so the test knows which one to catch holding messages
    [ingest_a] = wait_until(lambda: list(pending(cluster, INGEST, INGEST_GROUP)), 90, "server-a's ingest consumer")
    cluster.start_server_named("server-b")
    for name in ("server-a", "server-b"):
        wait_until(lambda n=name: httpx.get(cluster.url(n) + "/health", timeout=2).status_code == 200, 90,
                   f"{name} to answer /health")
    phase("both servers answer")
    apis = {name: httpx.Client(base_url=cluster.url(name), headers=AUTH, timeout=30)
            for name in ("server-a", "server-b")}

    rule = apis["server-a"].post("/rules", json={"name": "first loss", "expression": "loss/G > -1e9",
                                                 "preset": "demo-stable"})
    assert rule.status_code == 201, rule.text  # fires once per run: a second server must not fire it again
    runs = []
    for i in range(RUNS):
        api = apis["server-a" if i % 2 == 0 else "server-b"]
        r = api.post("/runs", json={"preset": "demo-stable", "name": f"scale {i}", "steps": STEPS,
                                    "overrides": {"train.checkpoint_every": CHECKPOINT_EVERY}})
        assert r.status_code == 202, r.text
        runs.append(r.json()["id"])

    def stored_points() -> int:  # over the API, whatever the storage layout
        keys = [apis["server-b"].get(f"/runs/{run_id}/keys").json()["data"] for run_id in runs]
        return sum(k["points"] for data in keys for k in data if k["key"] == "loss/D")

    wait_until(lambda: stored_points() >= RUNS * 10, 180, "every run's first points")
    phase("points flowing")
    # SIGKILL mid-ingest: the batch server-a read and did not acknowledge is reclaimed by server-b
    kill_while_holding(cluster, "server-a", INGEST, INGEST_GROUP, ingest_a)
    phase("server-a killed holding ingest messages")
    # SIGKILL mid-evaluation: worker-b reclaims the checkpoint
    kill_while_holding(cluster, "worker-a", CHECKPOINTS, WORKER_GROUP, "worker-a")
    phase("worker-a killed holding a checkpoint")
    api = apis["server-b"]

    # gc while the runs train (in-process, so it lists within a moment): the ghost run goes, an unknown run's
    # just-written artifact stays, nothing of the live runs moves (all read back against their sha256 below)
    time.sleep(max(0.0, planted_at + GRACE_S + 2 - time.time()))
    young = store.put_bytes("runs/not-ingested-yet/checkpoints/step-000000001.pt", b"just written")
    written_at = time.time()
    training = sum(api.get(f"/runs/{r}").json()["status"] == "running" for r in runs)
    report = collect_garbage(cluster.engine, store, GRACE_S).artifacts
    phase(f"gc done while {training} of {RUNS} runs trained")
    assert report.orphan_runs == ["ghost"] and report.orphans.bytes == ghost.size_bytes
    assert report.young_unknown_runs == ["not-ingested-yet"] and store.exists(young.uri)

    wait_until(lambda: all(api.get(f"/runs/{r}").json()["status"] == "finished" for r in runs), 300,
               "every run to finish")
    phase("every run finished")
    for run_id in runs:
        steps = sorted(c["step"] for c in cluster.rows("checkpoints", run_id))
        assert steps, f"run {run_id} recorded no checkpoint"
        evaluations = wait_until(lambda r=run_id, s=steps: (rows := cluster.rows("evaluations", r)) and sorted(
            e["checkpoint_step"] for e in rows) == s and rows, 240, f"every checkpoint of {run_id} evaluated")
        assert all(e["status"] in ("ok", "skipped") for e in evaluations), [e["error"] for e in evaluations]
        assert any(e["status"] == "ok" for e in evaluations)
        points = points_of(api, run_id)
        assert not [p for p, n in Counter(points).items() if n > 1], "a point stored twice"
        for key in ("loss/D", "loss/G", "angle/G", "angle/D"):
            assert sorted(s for k, s in points if k == key) == list(range(STEPS)), (run_id, key)
        alerts = [(a["rule"], a["step"]) for a in cluster.rows("alerts", run_id)]
        # once per run, by either server; its step is the first the rule saw, which is a later batch's when the
        # other server committed the earlier batch after it (a rule reads on from its cursor)
        assert [r for r, _ in alerts].count("first loss") == 1 and len(alerts) == len(set(alerts)), alerts
        # artifacts in S3: checkpoints against their recorded sha256, grids and the log through the server
        for checkpoint in cluster.rows("checkpoints", run_id):
            assert len(store.get_bytes(checkpoint["uri"], checkpoint["sha256"])) == checkpoint["size_bytes"]
        for e in (e for e in evaluations if e["grid_uri"]):
            png = api.get(f"/runs/{run_id}/samples/{e['checkpoint_step']}.png")
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), png.text
        # 'finished' comes from the run's Monitor; its agent copies the final log once it sees the process exit
        wait_until(lambda r=run_id: api.get(f"/runs/{r}/logs").json().get("lines"), 30,
                   f"{run_id}'s final training log in the store")
    assert not store.exists(ghost.uri)
    time.sleep(max(0.0, written_at + GRACE_S + 1 - time.time()))  # `sqd gc` itself, once the unknown run is old
    freed = sqd_gc(cluster, "--grace", f"{GRACE_S:g}s")["artifacts"]
    assert freed["orphan_runs"] == ["not-ingested-yet"] and freed["total"]["objects"] == 1, freed
    phase("every checkpoint evaluated, every point and artifact checked")

    health = api.get("/health").json()
    assert health["status"] == "ok" and health["ingest"]["running"], health
    assert health["bus"]["ingest_pending"] == 0, health
    for name in ("server-b", "worker-b", "agent-a", "agent-b"):
        assert cluster.procs[name].poll() is None, f"{name} exited: {cluster.log(name)[-2000:]}"
    assert cluster.bus().dead_letters(CHECKPOINTS) == []
    assert not list(cluster.root.glob("home-*/artifacts"))  # every artifact went to S3
