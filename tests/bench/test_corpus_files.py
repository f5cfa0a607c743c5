"""The committed corpus (bench/data/corpus): every file loads, carries the series the report needs, the metadata of
its run, and a label that still follows the rule of bench/corpus_labels.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from corpus_data import CORPUS_DIR, EPOCHLY_TAG, REQUIRED_KEYS, base_variant, family, load  # noqa: E402

FILES = sorted(CORPUS_DIR.glob("*.npz"))


def test_the_corpus_is_there_and_small():
    assert len(FILES) >= 10, "bench/data/corpus lost its recordings"
    assert max(p.stat().st_size for p in FILES) < 256 * 2**10  # a 6,000-step run is ~130-160 KiB


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_a_file_has_its_series_run_and_label(path):
    run = load(path)
    assert set(REQUIRED_KEYS) <= set(run.series)
    assert path.stem == f"{run.preset}{'-' + run.variant if run.variant else ''}-seed{run.seed}"
    assert run.meta["status"] == "finished" and run.config["train"]["seed"] == run.seed
    # the cadence tag in the name is the cadence the run was trained with
    assert (EPOCHLY_TAG in run.variant.split("-")) == (run.cadence == "every epoch")
    if base_variant(run.variant) == "ramp":  # demo-turning's lr warm-up (bench/corpus_record.py's RAMP)
        assert run.config["optim"]["lr_g"] == 4e-2 and run.config["burnin"] == {**run.config["burnin"], "steps": 3000,
                                                                                 "lr": 2e-3}
    assert run.stored_label_step == (-1 if run.label.turning_step is None else run.label.turning_step)
    assert run.steps_per_epoch > 0
    steps, values, epochs = run.series["eval/modes_covered"]
    assert steps.dtype.name == "int32" and values.dtype.name == "float32" and len(epochs) == len(steps)
    assert all(a["run_id"] == run.meta["id"] for a in run.alerts)


def test_families():
    assert family("sqd-hinge-gp-digits") == "sqd-grid GP" and family("sqd-hinge-digits") == "sqd-grid no-GP"
    assert family("granc-digits") == family("grand-digits") == "gran"
    assert family("icr-wgan-acgd-digits") == "icr" and family("r3gan-digits-r1") == "r3gan"
    assert family("demo-stable") == "demo-stable"
    assert family("sqd-hinge-gp-digits", "ramp") == "sqd-grid ramp GP"
    assert family("sqd-wgan-digits", "ramp") == "sqd-grid ramp no-GP"
    # the evaluation cadence is reported apart, never a family of its own
    assert family("sqd-wgan-digits", "ramp-e1") == "sqd-grid ramp no-GP"
    assert family("demo-stable", "e1") == "demo-stable"
