"""`sqd import mlflow` on a tracking store the mlflow package writes (SQLite backend, as MLflow 3 defaults to)."""

from __future__ import annotations

import math

import pytest

from sqd.importers.mlflow_runs import nest, param_value, sqd_tags

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # creating an MLflow database takes ~20 s here


def test_params_tags_units():
    assert [param_value(v) for v in ("1e-3", "64", "True", "None", "hinge", "nan")] == [1e-3, 64, True, None,
                                                                                          "hinge", "nan"]
    assert nest({"optim.lr": "2e-4", "optim.betas": "(0.5, 0.999)", "seed": "1", "a": "1", "a.b": "2"}) == {
        "optim": {"lr": 2e-4, "betas": "(0.5, 0.999)"}, "seed": 1, "a": 1, "a.b": 2}
    assert sqd_tags({"mlflow.runName": "x", "team": "gan", "baseline": "true", "bad": "a,b"}) == [
        "baseline", "team:gan"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gan")
    other = client.create_experiment("other")
    runs = {}
    for name, status in (("hinge-lr2e-4", "FINISHED"), ("wgan-diverged", "FAILED")):
        run = client.create_run(exp, run_name=name, tags={"team": "gan", "mlflow.note.content": f"{name} notes"})
        client.log_param(run.info.run_id, "optim.lr", "0.0002")
        client.log_param(run.info.run_id, "loss", name.split("-")[0])
        for step in range(0, 50, 5):
            client.log_metric(run.info.run_id, "loss_d", 1.0 / (step + 1), step=step,
                              timestamp=1_700_000_000_000 + step)
        client.log_metric(run.info.run_id, "fid", math.nan if status == "FAILED" else 42.0, step=49)
        client.set_terminated(run.info.run_id, status)
        runs[name] = run.info.run_id
    client.create_run(other, run_name="elsewhere")
    return uri, runs


def test_import_then_again_adds_nothing(store, api, sqd_import):
    uri, ids = store
    code, out = sqd_import("mlflow", "--tracking-uri", uri, "--experiment", "gan")
    assert code == 0, out
    assert "2 run(s) imported, 0 failed" in out
    runs = {r["name"]: r for r in api.get("/runs", params={"view": "all"}).json()["data"]}
    assert sorted(runs) == ["hinge-lr2e-4", "wgan-diverged"]
    good, bad = runs["hinge-lr2e-4"], runs["wgan-diverged"]
    assert good["id"] == f"mlflow-{ids['hinge-lr2e-4']}"
    assert (good["status"], good["config"], good["tags"]) == (
        "finished", {"optim": {"lr": 2e-4}, "loss": "hinge"}, ["imported", "mlflow", "team:gan"])
    assert good["notes"].startswith("hinge-lr2e-4 notes\nimported from MLflow run")
    assert (bad["status"], bad["error"]) == ("failed", "MLflow status FAILED")
    series = api.get(f"/runs/{good['id']}/metrics", params={"keys": "loss_d,fid"}).json()["series"]
    assert series["loss_d"]["step"] == list(range(0, 50, 5)) and series["fid"]["value"] == [42.0]
    assert api.get("/runs", params={"filter": "config.optim.lr >= 1e-4 and fid/x > 0 or metric.fid < 50"}
                   ).json()["data"][0]["id"] == good["id"]
    code, out = sqd_import("mlflow", "--tracking-uri", uri, "--experiment", "gan")
    assert code == 0 and out.count("(imported before)") == 2 and out.count("0 new points") == 2, out
    assert api.get("/runs").json()["count"] == 2


def test_unknown_experiment(store, sqd_import):
    uri, _ = store
    code, out = sqd_import("mlflow", "--tracking-uri", uri, "--experiment", "nope")
    assert code == 1 and "experiment 'nope': no such experiment; there are: " in out and "gan" in out, out
