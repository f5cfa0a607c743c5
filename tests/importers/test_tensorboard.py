"""`sqd import tensorboard DIR` on event files written by torch.utils.tensorboard's SummaryWriter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from sqd.importers.common import ImportFormatError
from sqd.importers.tensorboard import check_event_file, read_run, run_dirs


def write_logs(logdir, steps=20, name="dcgan"):
    """One GAN run as a user logs it: losses, a metric with a NaN, a sample grid every 5 steps, a real image."""
    writer = SummaryWriter(str(logdir / name))
    rng = np.random.default_rng(0)
    for step in range(steps):
        writer.add_scalar("Loss/G/loss", 1.0 / (step + 1), step)
        writer.add_scalar("loss_d", 0.5 + 0.01 * step, step)
        writer.add_scalar("fid", math.nan if step == 3 else 100.0 - step, step)
        if step % 5 == 0:
            writer.add_image("samples/fakes", rng.random((3, 16, 16)), step)
            writer.add_image("reals", rng.random((3, 16, 16)), step)
    writer.add_hparams({"lr": 2e-4, "loss": "hinge", "ema": True}, {"hp/final_fid": 81.0}, run_name=".")
    writer.close()
    return logdir / name


def test_read_run(tmp_path):
    run_dir = write_logs(tmp_path)
    run = read_run(run_dir, tmp_path)
    keys = sorted({p[0] for p in run.points})
    assert keys == ["fid", "hp/final_fid", "loss/G", "loss_d"]  # R3GAN/StyleGAN names mapped, the user's own kept
    assert run.config == {"lr": 2e-4, "loss": "hinge", "ema": True}  # add_hparams
    fid = sorted((s, v) for k, s, v, _, _ in run.points if k == "fid")
    assert len(fid) == 20 and math.isnan(fid[3][1]) and fid[4] == (4, 96.0)
    assert [s for s, _ in run.samples] == [0, 5, 10, 15] and run.notes.endswith("samples from image tag "
                                                                                 "'samples/fakes'")
    assert read_run(run_dir, tmp_path, samples_tag="reals").samples[0][1] != run.samples[0][1]
    assert run_dirs(tmp_path) == [run_dir]


def test_import_then_again_adds_nothing(tmp_path, api, sqd_import):
    write_logs(tmp_path / "logs", name="dcgan")
    write_logs(tmp_path / "logs", name="wgan", steps=10)
    code, out = sqd_import("tensorboard", str(tmp_path / "logs"), "--name", "tb")
    assert code == 0, out
    assert "2 run(s) imported, 0 failed" in out
    runs = {r["name"]: r for r in api.get("/runs").json()["data"]}
    assert sorted(runs) == ["tb/dcgan", "tb/wgan"]
    run = runs["tb/dcgan"]
    assert (run["status"], run["tags"]) == ("finished", ["imported", "tensorboard"])
    series = api.get(f"/runs/{run['id']}/metrics", params={"keys": "loss/G,fid"}).json()["series"]
    assert series["loss/G"]["step"] == list(range(20)) and series["loss/G"]["value"][1] == 0.5
    assert series["fid"]["value"][3] == "NaN"
    samples = api.get(f"/runs/{run['id']}/samples").json()["data"]
    assert [s["step"] for s in samples] == [0, 5, 10, 15]
    assert api.get(f"/runs/{run['id']}/samples/5.png").content[:4] == b"\x89PNG"
    code, out = sqd_import("tensorboard", str(tmp_path / "logs"), "--name", "tb")
    assert code == 0 and out.count("(imported before)") == 2 and "0 new points of 61" in out, out
    assert api.get("/runs").json()["count"] == 2


def test_a_damaged_file_names_file_and_record_and_imports_nothing_of_that_run(tmp_path, api, sqd_import):
    good = write_logs(tmp_path / "logs", name="good")
    bad = write_logs(tmp_path / "logs", name="bad")
    events = max(bad.glob("*tfevents*"), key=lambda p: p.stat().st_size)  # the scalars and images
    data = events.read_bytes()
    events.write_bytes(data[:-30])  # cut inside the last record, as a crashed writer leaves it
    with pytest.raises(ImportFormatError) as err:
        check_event_file(events)
    assert err.value.record.startswith("record ") and "cut short or corrupt" in err.value.problem
    code, out = sqd_import("tensorboard", str(tmp_path / "logs"))
    assert code == 1
    assert f"error {events}: {err.value.record}: cut short or corrupt (its length or checksum does not match): the " \
           "file was truncated or damaged — nothing of this run was imported" in out, out
    assert [r["name"] for r in api.get("/runs").json()["data"]] == ["good"]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # a bit flip in the middle: the record's checksum fails
    events.write_bytes(bytes(flipped))
    with pytest.raises(ImportFormatError, match="cut short or corrupt"):
        check_event_file(events)
    assert good.exists()


def test_no_event_files(tmp_path, sqd_import):
    code, out = sqd_import("tensorboard", str(tmp_path))
    assert code == 1 and f"{tmp_path}: no TensorBoard event files (*tfevents*) in it or below it" in out
