"""`sqd gc`, artifact half, on a local store and on S3 (moto), with SQLite and PostgreSQL: it frees the artifacts
of runs that are not in the database and the debris of crashed writes, reports what it freed, and removes nothing
a live run needs while that run writes checkpoints at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import MotoServer
from sqlalchemy import Engine

from sqd.artifacts import ArtifactRef, ArtifactStore
from sqd.server.cli import parse_duration
from sqd.server.gc import collect_garbage
from sqd.server.store import migrate
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Run
from sqd.settings import Settings

HOUR = 3600.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with session_factory(engine)() as session:
        session.add_all([Run(id="live", name="live", status="running"),
                         Run(id="done", name="done", status="finished")])
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    moto: MotoServer = request.getfixturevalue("moto_s3")
    settings = Settings(home=tmp_path, artifacts_url=f"s3://{moto.new_bucket()}/sqd", artifacts=moto.settings())
    return ArtifactStore.from_settings(settings)


class Writer(threading.Thread):
    """A run writing checkpoints as fast as the store takes them, as the Monitor's sender thread does."""

    def __init__(self, store: ArtifactStore, run_id: str):
        super().__init__(daemon=True)
        self.store, self.run_id = store, run_id
        self.refs: list[ArtifactRef] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = 0
            while not self.stop.is_set():
                step += 1
                self.refs.append(self.store.put_bytes(f"runs/{self.run_id}/checkpoints/step-{step:09d}.pt",
                                                      os.urandom(20_000)))
        except BaseException as exc:
            self.error = exc


def age(store: ArtifactStore, key: str, seconds: float) -> None:
    """Backdate a local object (S3 keeps the server's clock: the S3 case waits instead)."""
    then = time.time() - seconds
    os.utime(store.local_path(key), (then, then), follow_symlinks=False)


def plant_ghost(store: ArtifactStore, tmp_path: Path) -> tuple[list[str], int]:
    """A run that is not in the database: a checkpoint, a grid, a log (and locally a link out of the store)."""
    keys = {"runs/ghost/checkpoints/step-000000100.pt": b"g" * 30_000, "runs/ghost/samples/step-000000100.png":
            b"p" * 4_000, "runs/ghost/train.log": b"line\n" * 100}
    for key, data in keys.items():
        store.put_bytes(key, data)
    size = sum(len(d) for d in keys.values())
    if store.is_local:
        outside = tmp_path / "outside.txt"
        outside.write_text("not the store's to delete")
        os.symlink(outside, store.local_path("runs/ghost/samples/elsewhere.png"))
        keys["runs/ghost/samples/elsewhere.png"] = b""
        size += os.lstat(store.local_path("runs/ghost/samples/elsewhere.png")).st_size
        for key in keys:
            age(store, key, 2 * HOUR)
    return sorted(keys), size


@pytest.mark.slow
def test_gc_frees_orphans_and_debris_and_spares_a_run_writing_meanwhile(store: ArtifactStore, engine: Engine,
                                                                       tmp_path: Path) -> None:
    ghost_keys, ghost_bytes = plant_ghost(store, tmp_path)
    kept_by_db = store.put_bytes("runs/done/checkpoints/step-000000001.pt", b"d" * 1000)  # old, but its run exists
    stale_temp = young_temp = None
    if store.is_local:
        age(store, kept_by_db.uri, 10 * HOUR)
        stale_temp = f"runs/live/checkpoints/step-000000007.pt.tmp-{uuid.uuid4().hex}"  # a crashed write
        young_temp = f"runs/done/checkpoints/step-000000002.pt.tmp-{uuid.uuid4().hex}"  # a write under way
        for key, data in ((stale_temp, b"t" * 500), (young_temp, b"u" * 700)):
            os.makedirs(os.path.dirname(store.local_path(key)), exist_ok=True)
            Path(store.local_path(key)).write_bytes(data)
        age(store, stale_temp, 2 * HOUR)
        grace_s = HOUR
    else:
        bucket, key = store.root.split("/", 1)[0], f"{store.root.split('/', 1)[1]}/runs/ghost/checkpoints/big.pt"
        upload = store.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)  # a crashed big write
        store.fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                         Body=b"m" * 5000)
        grace_s = 5.0
        time.sleep(grace_s + 1)  # S3 dates objects by the server's clock: let the planted ones grow old

    writers = [Writer(store, "live"), Writer(store, "arriving")]  # "arriving": not ingested yet, so unknown
    for w in writers:
        w.start()
    while not all(len(w.refs) >= 3 for w in writers):
        time.sleep(0.05)

    dry = collect_garbage(engine, store, grace_s, dry_run=True)
    assert dry.artifacts.orphan_runs == ["ghost"] and dry.artifacts.orphans.objects == len(ghost_keys)
    assert store.exists(ghost_keys[0])  # a dry run removes nothing
    first = collect_garbage(engine, store, grace_s)
    again = collect_garbage(engine, store, grace_s)  # with the writers still going: nothing more to free
    for w in writers:
        w.stop.set()
        w.join(30)
        assert w.error is None, w.error

    a = first.artifacts
    assert (a.orphan_runs, a.orphans.objects, a.orphans.bytes) == (["ghost"], len(ghost_keys), ghost_bytes)
    assert a.young_unknown_runs == ["arriving"]
    assert again.artifacts.total.objects == 0 and again.artifacts.young_unknown_runs == ["arriving"]
    assert not any(store.exists(k) for k in ghost_keys)
    assert [o.key for o in store.list_objects("runs/ghost")] == []
    if store.is_local:
        assert (a.temp_files.objects, a.temp_files.bytes) == (1, 500)
        assert not store.exists(str(stale_temp)) and store.exists(str(young_temp))
        assert (tmp_path / "outside.txt").read_text() == "not the store's to delete"  # the link went, not its target
        assert not os.path.exists(store.local_path("runs/ghost"))
    else:
        assert (a.partial_uploads.objects, a.partial_uploads.bytes) == (1, 5000)
        assert store.partial_uploads() == []
    assert store.get_bytes(kept_by_db.uri, kept_by_db.sha256) == b"d" * 1000
    for w in writers:  # every checkpoint either run wrote is there, whole
        for ref in w.refs:
            assert len(store.get_bytes(ref.uri, ref.sha256)) == 20_000


def test_sqd_gc_command_reports_what_it_freed(tmp_path: Path) -> None:
    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'sqd.db'}"
    store = ArtifactStore(str(home / "artifacts"))
    engine = make_engine(db)
    migrate.upgrade(engine)
    with session_factory(engine)() as session:
        session.add(Run(id="kept", name="kept", status="finished"))
        session.commit()
    engine.dispose()
    for run_id in ("kept", "gone"):
        store.put_bytes(f"runs/{run_id}/checkpoints/step-000000001.pt", b"x" * 2500)
        age(store, f"runs/{run_id}/checkpoints/step-000000001.pt", 3 * HOUR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQD_")}
    env.update({"SQD_HOME": str(home), "SQD_DATABASE_URL": db})

    def gc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sqd", "gc", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    out = gc("--grace", "4h")
    assert out.returncode == 0, out.stderr
    assert "freed 0 objects" in out.stdout and "kept 1 unknown run(s)" in out.stdout
    out = gc("--grace", "2h", "--json")
    report = json.loads(out.stdout)
    assert report["artifacts"]["orphan_runs"] == ["gone"]
    assert report["artifacts"]["total"] == {"objects": 1, "bytes": 2500}
    assert report["data"]["runs"] == [] and report["data"]["points"] == 0
    assert store.exists("runs/kept/checkpoints/step-000000001.pt")
    assert not store.exists("runs/gone/checkpoints/step-000000001.pt")
    bad = gc("--grace", "soon")
    assert bad.returncode == 2 and "'soon' is not a duration; write e.g. 90s, 30m, 2h or 7d" in bad.stderr


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1.5d")] == [90, 90, 1800, 7200, 129600]
