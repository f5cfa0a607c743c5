"""`sqd up` as a user runs it: a real process tree, started, probed, stopped with Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from sqd.embedded_redis import EmbeddedRedis, free_port
from sqd.protocol import RunStarted
from sqd.wire import encode

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def start_up(home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQD_")}
    env["SQD_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "sqd", "up", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_health(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("sqd up did not become healthy")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def test_up_serves_health_prints_token_url_and_stops_cleanly(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = start_up(home, port)
    wait_health(port, proc)
    assert len(processes_mentioning(str(home))) >= 1  # the embedded valkey runs from the data dir
    out = stop(proc)
    assert proc.returncode == 0, out
    token = (home / "token").read_text().strip()
    assert f"http://127.0.0.1:{port}/?token={token}" in out
    assert processes_mentioning(str(home)) == []  # valkey gone
    assert processes_mentioning(f"--port {port}") == []  # server gone


def test_restart_keeps_bus_contents(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = start_up(home, port)
    wait_health(port, proc)
    client = redis.Redis(unix_socket_path=str(home / "valkey" / "valkey.sock"))
    client.xadd("keep:me", encode(RunStarted(run_id="persisted")))
    client.close()
    stop(proc)
    proc = start_up(home, port)
    wait_health(port, proc)
    client = redis.Redis(unix_socket_path=str(home / "valkey" / "valkey.sock"))
    assert client.xlen("keep:me") == 1
    client.close()
    stop(proc)


def test_port_taken_gives_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = start_up(tmp_path / "home", port)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out and "--port" in out
    assert processes_mentioning(str(tmp_path / "home")) == []


def test_unwritable_data_dir_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = start_up(blocker / "home", free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"data dir {blocker / 'home'} is not writable" in out and "SQD_HOME" in out


def test_embedded_server_recovers_streams_after_sigkill(tmp_path):
    server = EmbeddedRedis(tmp_path / "v")
    server.start()
    client = redis.Redis.from_url(server.url)
    for i in range(100):
        client.xadd("s", {"i": i})
    server.kill()
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.xlen("s") == 100
    server.stop()


def test_second_instance_on_same_home_is_refused(tmp_path):
    first = EmbeddedRedis(tmp_path / "v")
    first.start()
    try:
        with pytest.raises(Exception, match="another `sqd up` is using this data dir"):
            EmbeddedRedis(tmp_path / "v").start()
    finally:
        first.stop()


def test_banner_reaches_a_log_file_whole_as_soon_as_the_server_answers(tmp_path):
    """`sqd up > up.log`: the export line stays one line (rich wraps at 80 columns off a terminal) and is in the
    file by the time /health answers (it is flushed then, not when the process ends)."""
    home, port = tmp_path / "home", free_port()
    log = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQD_")}
    env.update(SQD_HOME=str(home), COLUMNS="80")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sqd", "up", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.DEVNULL)
    try:
        wait_health(port, proc)
        deadline = time.monotonic() + 20  # the banner follows the first healthy answer within moments
        while "Stop:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = log.read_text().splitlines()
        [export] = [line for line in lines if "export SQD_URL=" in line]
        token = (home / "token").read_text().strip()
        assert export.strip() == f"Scripts:   export SQD_URL=http://127.0.0.1:{port} SQD_TOKEN={token}"
        assert f"  Dashboard: http://127.0.0.1:{port}/?token={token}" in lines
        shell = subprocess.run(["bash", "-c", f"{export.split(':', 1)[1].strip()}; "
                                "curl -sf -H \"Authorization: Bearer $SQD_TOKEN\" -X POST \"$SQD_URL/api/v1/runs\" "
                                "-H 'Content-Type: application/json' -d '{\"name\": \"from the log\"}'"],
                               capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0 and '"name":"from the log"' in shell.stdout, shell.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
