"""`sqd sweep` and `sqd sweeps ls|show|export|cancel|builtin` as a user runs them, against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from server_support import ADMIN, AUTH

from sqd.bus import CONTROL
from sqd.wire import decode

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def sqd(server, *args):
    out = subprocess.run([sys.executable, "-m", "sqd", *args], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL,
                         env={**os.environ, "SQD_URL": server.url, "SQD_TOKEN": ADMIN, "COLUMNS": "200"})
    return out.returncode, out.stdout, out.stderr


def sweeps(server):
    return httpx.get(f"{server.url}/api/v1/sweeps", headers=AUTH).json()


def launched(bus):
    return [decode(f).run_id for _, f in bus.client.xrange(bus.key(CONTROL)) if decode(f).type == "launch"]


def test_sweep_a_grid_from_the_command_line(live_server, api_bus):
    code, out, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "--grid", "loss.name=nsgan,lsgan,hinge,wgan",
                         "--grid", "reg.names=none,gp", "--seeds", "3", "--max-concurrent", "4", "--steps", "50",
                         "--name", "cli grid")
    assert code == 0, err
    assert "'cli grid': 24 runs (8 configurations × 3 seeds), 4 handed to the agents now (at most 4 at once)" in out
    sweep_id = sweeps(live_server)["data"][0]["id"]
    assert f"{live_server.url}/#/sweep/{sweep_id}" in out
    sweep = httpx.get(f"{live_server.url}/api/v1/sweeps/{sweep_id}").json()
    assert sweep["dimensions"] == ["loss.name", "reg.names"] and sweep["spec"]["steps"] == 50
    assert len(launched(api_bus)) == 4

    code, out, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "sqd-wgan-gp-digits", "--seeds", "2",
                         "--set", "train.batch=32", "--grid", "reg.names=none,[gp,r1]")
    assert code == 0 and "8 runs (4 configurations × 2 seeds)" in out, err
    newest = httpx.get(f"{live_server.url}/api/v1/sweeps/{sweeps(live_server)['data'][0]['id']}").json()
    assert {tuple(r["params"]["reg.names"]) for r in newest["runs"]} == {(), ("gp", "r1")}
    assert all(r["config"]["train"]["batch"] == 32 for r in newest["runs"])

    code, out, _ = sqd(live_server, "sweeps", "ls")
    assert code == 0 and "cli grid" in out and "24 queued" in out
    code, out, _ = sqd(live_server, "sweeps", "show", sweep_id)
    assert code == 0 and "loss.name=wgan · reg.names=gp" in out and "queued" in out
    code, out, _ = sqd(live_server, "sweeps", "export", sweep_id, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("loss.name,reg.names,run_id") and len(out.splitlines()) == 25
    code, out, _ = sqd(live_server, "sweeps", "cancel", sweep_id)
    assert code == 0 and "cancelling" in out and "20 cancelled" in out


def test_bad_input_from_the_command_line(live_server, api_bus):
    code, _, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "--grid", "loss.name=nsgan,minimax",
                       "--grid", "optim.lr_g=1e-3,-2")
    assert code == 1 and "nothing was queued" in err
    assert "grid loss.name: value 'minimax' is invalid" in err and "grid optim.lr_g: value '-2' is invalid" in err
    code, _, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "--grid", "loss.name")
    assert code == 1 and "--grid 'loss.name': expected KEY=VALUE" in err
    code, _, err = sqd(live_server, "sweep", "--grid", "loss.name=hinge")
    assert code == 1 and "name the preset(s) to sweep" in err
    code, _, err = sqd(live_server, "sweep", "no-such-preset")
    assert code == 1 and "unknown preset 'no-such-preset'" in err
    code, _, err = sqd(live_server, "sweep", "--builtin", "nope")
    assert code == 1 and "no built-in sweep 'nope'; built in: sqd-grid" in err
    many = ",".join(str(i / 1000) for i in range(1, 102))
    code, _, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "--grid", f"optim.lr_g={many}", "--seeds", "2")
    assert code == 1 and "202 runs" in err and "--yes" in err
    assert sweeps(live_server)["count"] == 0 and launched(api_bus) == []
    code, out, err = sqd(live_server, "sweep", "sqd-nsgan-digits", "--grid", f"optim.lr_g={many}", "--seeds", "2",
                         "--yes", "--max-concurrent", "1")
    assert code == 0 and "202 runs" in out, err


def test_builtin_sqd_grid(live_server, api_bus):
    code, out, _ = sqd(live_server, "sweeps", "builtin")
    assert code == 0 and "sqd-grid" in out and "SQD grid (seed 003)" in out
    code, out, err = sqd(live_server, "sweep", "--builtin", "sqd-grid", "--steps", "60", "--max-concurrent", "2")
    assert code == 0 and "'SQD grid (seed 003)': 24 runs (8 configurations × 3 seeds)" in out, err
    sweep = httpx.get(f"{live_server.url}/api/v1/sweeps/{sweeps(live_server)['data'][0]['id']}").json()
    assert sweep["dimensions"] == ["loss.name", "reg.names"]
    assert [r["label"] for r in sweep["runs"][::3]] == [
        "sqd-nsgan-digits", "sqd-nsgan-gp-digits", "sqd-lsgan-digits", "sqd-lsgan-gp-digits", "sqd-hinge-digits",
        "sqd-hinge-gp-digits", "sqd-wgan-digits", "sqd-wgan-gp-digits"]
    code, out, err = sqd(live_server, "sweep", "--builtin", "SQD grid (seed 003)", "--seeds", "1")
    assert code == 0 and "8 runs (8 configurations × 1 seeds)" in out, err
