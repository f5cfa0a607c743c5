"""`sqd import stats-jsonl` on a run directory in StyleGAN3 / R3GAN's format (training_loop.py's stats.jsonl,
metric_main.report_metric's metric-*.jsonl, training_options.json, fakes*.png)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from PIL import Image

from sqd.importers.stylegan_keys import kimg_step, metric_key
from sqd.importers.stylegan_stats import read_run

T0 = 1_700_000_000.0


def stat(mean: float, num: int = 4) -> dict[str, float]:
    return {"num": num, "mean": mean, "std": 0.1 if num > 1 else 0.0}  # Collector.as_dict() entries


def png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def write_run(root: Path, ticks: int = 5, name: str = "00003-r3gan-cifar10-gpus1-batch64") -> Path:
    run = root / name
    run.mkdir(parents=True)
    with open(run / "stats.jsonl", "w") as fh:
        for tick in range(ticks):
            kimg = tick * 4.096  # kimg_per_tick 4 at batch 64: ticks land past whole kimg
            fields = {"Loss/G/loss": stat(2.0 - tick * 0.1), "Loss/D/loss": stat(0.5 + tick * 0.01),
                      "Loss/r1_penalty": stat(0.03), "Loss/signs/fake": stat(-0.2),
                      "Progress/tick": stat(tick, 1), "Progress/kimg": stat(kimg, 1),
                      "Timing/sec_per_kimg": stat(math.nan, 0),  # not reported this tick (num 0)
                      "Resources/cpu_mem_gb": stat(3.5, 1)}
            if tick == 2:
                fields["Loss/G/loss"] = stat(math.nan)  # a NaN mean is kept as NaN
            fh.write(json.dumps(dict(fields, timestamp=T0 + 60 * tick)) + "\n")  # json writes NaN as NaN
    with open(run / "metric-fid50k_full.jsonl", "w") as fh:
        for kimg, fid in ((0, 300.0), (16, 45.5)):
            fh.write(json.dumps({"results": {"fid50k_full": fid}, "metric": "fid50k_full", "total_time": 100.0,
                                 "total_time_str": "1m 40s", "num_gpus": 1,
                                 "snapshot_pkl": f"network-snapshot-{kimg:09d}.pkl", "timestamp": T0 + kimg}) + "\n")
    (run / "training_options.json").write_text(json.dumps({"G_kwargs": {"class_name": "R3GAN.Networks.Generator"},
                                                           "batch_size": 64, "total_kimg": 16}, indent=2))
    (run / "fakes_init.png").write_bytes(png(10))
    (run / "fakes000008.png").write_bytes(png(100))
    (run / "fakes000016.png").write_bytes(png(200))
    return run


def test_key_mapping_and_steps():
    assert [metric_key(n) for n in ("Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Metrics/fid50k_full",
                                    "Metrics/kid50k_full", "Progress/kimg", "my_own")] == [
        "loss/G", "loss/D", "loss/r1_penalty", "eval/fid", "eval/kid50k_full", "progress/kimg", "my_own"]
    assert (kimg_step(4.096, "kimg"), kimg_step(4.096, "nimg"), kimg_step(7.0, "kimg")) == (4, 4096, 7)


def test_read_run(tmp_path):
    run = read_run(write_run(tmp_path) / "stats.jsonl")
    keys = {p[0] for p in run.points}
    assert keys == {"loss/G", "loss/D", "loss/r1_penalty", "loss/signs/fake", "progress/tick", "progress/kimg",
                    "resources/cpu_mem_gb", "eval/fid"}  # Timing/sec_per_kimg had num 0 every tick
    loss_g = sorted((s, v) for k, s, v, _, _ in run.points if k == "loss/G")
    assert [s for s, _ in loss_g] == [0, 4, 8, 12, 16] and math.isnan(loss_g[2][1])
    assert sorted((s, v) for k, s, v, _, _ in run.points if k == "eval/fid") == [(0, 300.0), (16, 45.5)]
    assert run.config["batch_size"] == 64 and run.name == "00003-r3gan-cifar10-gpus1-batch64"
    assert [s for s, _ in run.samples] == [0, 8, 16]
    assert (run.started_at, run.finished_at) == (T0, T0 + 240)
    assert read_run(tmp_path / "00003-r3gan-cifar10-gpus1-batch64").run_id == run.run_id  # the directory: same run


def test_import_then_again_adds_nothing(tmp_path, api, sqd_import):
    run_dir = write_run(tmp_path)
    code, out = sqd_import("stats-jsonl", str(run_dir / "stats.jsonl"))
    assert code == 0, out
    assert "1 run(s) imported, 0 failed" in out
    [run] = api.get("/runs").json()["data"]
    assert (run["name"], run["status"], run["tags"]) == (run_dir.name, "finished", ["imported", "stylegan"])
    assert (run["started_at"], run["finished_at"], run["config"]["total_kimg"]) == (T0, T0 + 240, 16)
    series = api.get(f"/runs/{run['id']}/metrics", params={"keys": "loss/G,eval/fid"}).json()["series"]
    assert series["loss/G"]["step"] == [0, 4, 8, 12, 16] and series["loss/G"]["value"][2] == "NaN"
    assert series["eval/fid"]["value"] == [300.0, 45.5]
    samples = api.get(f"/runs/{run['id']}/samples").json()["data"]
    assert [s["step"] for s in samples] == [0, 8, 16]
    assert api.get(f"/runs/{run['id']}/samples/8.png").content == png(100)
    before = api.get(f"/runs/{run['id']}/keys").json()
    code, out = sqd_import("stats-jsonl", str(run_dir), "--name", "r3gan cifar")
    assert code == 0 and "0 new points of" in out and "(imported before)" in out, out
    assert api.get("/runs").json()["count"] == 1 and api.get(f"/runs/{run['id']}/keys").json() == before
    assert api.get(f"/runs/{run['id']}").json()["name"] == "r3gan cifar"


def test_a_bad_line_names_file_and_line_and_imports_nothing(tmp_path, api, sqd_import):
    run_dir = write_run(tmp_path)
    lines = (run_dir / "stats.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "stats.jsonl").write_text("".join(lines[:3]) + lines[3][:40])  # killed while writing line 4
    code, out = sqd_import("stats-jsonl", str(run_dir))
    assert code == 1
    assert (f"error {run_dir / 'stats.jsonl'}: line 4: not valid JSON: Expecting property name enclosed in double "
            "quotes (a run killed while writing leaves a partial last line: delete it) — nothing of this run was "
            "imported") in out, out
    assert api.get("/runs").json()["count"] == 0
    (run_dir / "stats.jsonl").write_text("".join(lines))
    with open(run_dir / "metric-fid50k_full.jsonl", "a") as fh:
        fh.write(json.dumps({"results": {"fid50k_full": 1.0}, "snapshot_pkl": None, "timestamp": T0}) + "\n")
    code, out = sqd_import("stats-jsonl", str(run_dir))
    assert code == 1 and "metric-fid50k_full.jsonl: line 3: 'snapshot_pkl' None does not name a " \
                         "network-snapshot-<kimg>.pkl, which gives the step" in out, out
    assert api.get("/runs").json()["count"] == 0
    code, out = sqd_import("stats-jsonl", str(tmp_path / "nowhere"))
    assert code == 1 and "no such file or directory" in out
