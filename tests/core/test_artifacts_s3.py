"""The artifact store on a real S3 API (moto's server mode on loopback, through s3fs): checkpoints and sample grids
round-trip with their sha256, a replaced object is never read half-written, a corrupt object is reported and
nothing else is touched, and a missing bucket stops every role at start with the URL in the message."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from s3_server import MotoServer

from sqd.artifacts import ArtifactStore, sha256_hex, storage_options
from sqd.errors import ArtifactError
from sqd.settings import ArtifactSettings, Settings
from sqd.worker.grid import grid_key, grid_png


@pytest.fixture
def s3_settings(moto_s3: MotoServer, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", artifacts_url=f"s3://{moto_s3.new_bucket()}/team/sqd",
                    artifacts=moto_s3.settings())


@pytest.fixture
def s3_store(s3_settings: Settings) -> ArtifactStore:
    store = ArtifactStore.from_settings(s3_settings)
    store.verify()
    return store


def checkpoint_bytes() -> bytes:
    generator = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3 * 16 * 16))
    buf = io.BytesIO()
    torch.save({"step": 40, "generator": generator.state_dict()}, buf)
    return buf.getvalue()


def test_checkpoint_and_grid_round_trip_with_their_sha256(s3_store: ArtifactStore, moto_s3: MotoServer) -> None:
    ckpt, grid = checkpoint_bytes(), grid_png(torch.rand(64, 3, 16, 16) * 2 - 1)
    refs = [s3_store.put_bytes("runs/r1/checkpoints/step-000000040.pt", ckpt),
            s3_store.put_bytes(grid_key("r1", 40), grid)]
    assert [r.sha256 for r in refs] == [sha256_hex(ckpt), sha256_hex(grid)]
    state = torch.load(io.BytesIO(s3_store.get_bytes(refs[0].uri, refs[0].sha256)), weights_only=True)
    assert state["step"] == 40 and set(state["generator"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert s3_store.get_bytes(refs[1].uri, refs[1].sha256) == grid
    # one PUT per artifact, under the URL's prefix, and no temporary key beside it
    listed = moto_s3.client().list_objects_v2(Bucket=s3_store.root.split("/")[0])["Contents"]
    assert sorted(o["Key"] for o in listed) == ["team/sqd/runs/r1/checkpoints/step-000000040.pt",
                                               "team/sqd/runs/r1/samples/step-000000040.png"]
    assert [o.key for o in s3_store.list_objects("runs/r1/samples")] == ["runs/r1/samples/step-000000040.png"]


def test_a_replaced_object_is_read_whole_old_or_new(s3_store: ArtifactStore) -> None:
    versions = [bytes([i]) * 1_500_000 for i in range(2)]
    digests = {sha256_hex(v) for v in versions}
    s3_store.put_bytes("runs/r1/train.log", versions[0])
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(sha256_hex(s3_store.get_bytes("runs/r1/train.log")))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(12):
        s3_store.put_bytes("runs/r1/train.log", versions[i % 2])
    done.set()
    reader.join()
    assert seen and set(seen) <= digests


def test_a_corrupt_object_is_reported_and_nothing_else_is_touched(s3_store: ArtifactStore,
                                                                  moto_s3: MotoServer) -> None:
    good = s3_store.put_bytes("runs/r1/checkpoints/step-000000010.pt", b"good checkpoint")
    bad = s3_store.put_bytes("runs/r1/checkpoints/step-000000020.pt", b"another checkpoint")
    bucket, prefix = s3_store.root.split("/", 1)
    moto_s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{bad.uri}", Body=b"another checkpoinT")
    with pytest.raises(ArtifactError, match=r"get runs/r1/checkpoints/step-000000020.pt: sha256 mismatch "
                                            r"\(recorded [0-9a-f]{12}…, file has [0-9a-f]{12}…\)"):
        s3_store.get_bytes(bad.uri, bad.sha256)
    assert s3_store.get_bytes(good.uri, good.sha256) == b"good checkpoint"
    assert s3_store.get_bytes(bad.uri) == b"another checkpoinT"  # kept as it is, for whoever investigates


def test_a_missing_key_names_the_key_and_the_store(s3_store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match=r"get runs/x/nope.pt: no such artifact in s3://") as info:
        s3_store.get_bytes("runs/x/nope.pt")
    assert isinstance(info.value.__cause__, FileNotFoundError)  # the worker's "message's fault", not "retry"


def test_a_missing_bucket_is_refused_at_start_naming_the_url(moto_s3: MotoServer, tmp_path: Path) -> None:
    store = ArtifactStore.from_settings(Settings(home=tmp_path, artifacts_url="s3://no-such-bucket/sqd",
                                                 artifacts=moto_s3.settings()))
    with pytest.raises(ArtifactError) as info:
        store.verify()
    assert str(info.value) == (
        f"artifact store s3://no-such-bucket/sqd (endpoint {moto_s3.endpoint}): bucket 'no-such-bucket' does not "
        "exist; create it (e.g. `aws s3 mb s3://no-such-bucket` or `mc mb <alias>/no-such-bucket`) or fix "
        "SQD_ARTIFACTS_URL")


@pytest.mark.parametrize("role", ["server", "worker", "agent"])
def test_every_role_stops_at_start_on_a_missing_bucket(role: str, moto_s3: MotoServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQD_", "AWS_"))}
    env.update({"SQD_HOME": str(tmp_path), "SQD_ARTIFACTS_URL": "s3://no-such-bucket/sqd",
                "SQD_REDIS_URL": "redis://127.0.0.1:1/0", **moto_s3.env()})  # it must stop before the bus
    out = subprocess.run([sys.executable, "-m", "sqd", role], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "error: artifact store s3://no-such-bucket/sqd" in out.stderr
    assert "bucket 'no-such-bucket' does not exist" in out.stderr


def test_an_unreachable_endpoint_is_a_transient_store_error(tmp_path: Path) -> None:
    options = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    store = ArtifactStore.from_settings(Settings(home=tmp_path, artifacts_url="s3://b/p", artifacts=ArtifactSettings(
        endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s", options=options)))
    with pytest.raises(ArtifactError, match=r"put runs/r/a.pt: cannot write to s3://b/p: Could not connect") as info:
        store.put_bytes("runs/r/a.pt", b"x")
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError)  # the worker retries these


def test_settings_map_to_s3fs_options_and_are_refused_for_other_urls() -> None:
    cfg = ArtifactSettings(endpoint_url="http://minio:9000", region="eu-west-1", access_key_id="id",
                           secret_access_key="secret", options={"client_kwargs": {"verify": False}})
    assert storage_options("s3://b/p", cfg) == {
        "endpoint_url": "http://minio:9000", "key": "id", "secret": "secret", "use_listings_cache": False,
        "client_kwargs": {"region_name": "eu-west-1", "verify": False}}
    assert storage_options("s3://b/p", ArtifactSettings()) == {"use_listings_cache": False}  # botocore's chain
    assert storage_options("/data/artifacts", ArtifactSettings(options={"auto_mkdir": True})) == {"auto_mkdir": True}
    with pytest.raises(ArtifactError, match="SQD_ARTIFACTS__ENDPOINT_URL apply to s3:// artifact stores, but "
                                            "SQD_ARTIFACTS_URL is '/data/artifacts'"):
        storage_options("/data/artifacts", ArtifactSettings(endpoint_url="http://minio:9000"))


def test_child_processes_get_the_same_store_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ArtifactSettings(endpoint_url="http://minio:9000", secret_access_key="secret", options={"a": 1})
    for name, value in cfg.env().items():
        monkeypatch.setenv(name, value)
    assert Settings().artifacts == cfg
