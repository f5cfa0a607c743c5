"""`sqd up`: the whole system on one machine — embedded Valkey, SQLite, the server, one evaluation worker and
one trainer agent — each role in its own process group, supervised, and stopped cleanly on Ctrl-C / SIGTERM.

Output: the banner (dashboard URL with its token, the `export SQD_URL=… SQD_TOKEN=…` line for scripts) goes to
stdout as plain, unwrapped lines, flushed the moment the server answers /health; progress, the table of roles
and restarts go to stderr through rich.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from sqd.embedded_redis import EmbeddedRedis
from sqd.errors import SQDError
from sqd.settings import Settings

ROLES = ("server", "worker", "agent")
RESTARTS_ALLOWED = 3
console = Console(stderr=True)


def ensure_writable(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SQDError(f"data dir {home} is not writable ({exc.strerror}); set SQD_HOME to a writable "
                       "directory") from exc


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SQDError(f"port {port} on {host} is already in use (another `sqd up`?); "
                               f"choose another with --port") from exc
            raise


def admin_token(settings: Settings) -> str:
    """SQD_TOKEN if set, else a token kept in $SQD_HOME/token (created once, mode 0600)."""
    if settings.token is not None:
        return settings.token.get_secret_value()
    path = settings.home / "token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


@dataclass
class Child:
    role: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self, env: dict[str, str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        self.process = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def signal_group(self, sig: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class Stack:
    settings: Settings
    port: int
    children: list[Child] = field(default_factory=list)
    redis: EmbeddedRedis | None = None
    token: str = ""
    stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"SQD_HOME": str(self.settings.home), "SQD_REDIS_URL": redis_url, "SQD_TOKEN": self.token,
                    "SQD_DATABASE_URL": self.settings.resolved_database_url,
                    "SQD_ARTIFACTS_URL": self.settings.resolved_artifacts_url, **self.settings.artifacts.env(),
                    "SQD_SERVER__PORT": str(self.port), "PYTHONUNBUFFERED": "1"})
        return env

    def start(self) -> None:
        home = self.settings.home
        ensure_writable(home)
        ensure_port_free(self.settings.server.host, self.port)
        self.token = admin_token(self.settings)
        redis_url = self.settings.redis_url
        if redis_url is None:
            self.redis = EmbeddedRedis(home / "valkey")
            redis_url = self.redis.start()
        logs = home / "logs"
        logs.mkdir(exist_ok=True)
        env = self.child_env(redis_url)
        for role in ROLES:
            argv = [sys.executable, "-m", "sqd", role]
            if role == "server":
                argv += ["--port", str(self.port), "--host", self.settings.server.host]
            child = Child(role, argv, logs / f"{role}.log")
            child.start(env)
            self.children.append(child)
        self._env = env

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_children()
            try:
                if httpx.get(f"{self.base_url}/api/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SQDError(f"the server did not answer {self.base_url}/api/v1/health within {timeout_s:.0f}s; "
                       f"see {self.settings.home / 'logs' / 'server.log'}")

    def check_children(self) -> None:
        """Restart a role that died (a few times), so one crash does not take the stack down."""
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is None or self.stop_event.is_set():
                continue
            if child.restarts >= RESTARTS_ALLOWED:
                raise SQDError(f"{child.role} keeps exiting (code {code}); see {child.log_path}")
            child.restarts += 1
            console.print(f"[yellow]{child.role} exited with code {code}; restarting "
                          f"({child.restarts}/{RESTARTS_ALLOWED}), log: {child.log_path}")
            child.start(self._env)

    def describe(self) -> Table:
        table = Table(title="sqd is up", show_header=True)
        table.add_column("role")
        table.add_column("where")
        table.add_row("bus", self.redis.url if self.redis else str(self.settings.redis_url))
        table.add_row("database", self.settings.resolved_database_url)
        table.add_row("artifacts", self.settings.resolved_artifacts_url)
        for child in self.children:
            assert child.process is not None
            table.add_row(child.role, f"pid {child.process.pid}, log {child.log_path}")
        return table

    def stop(self, grace_s: float = 15.0) -> None:
        self.stop_event.set()
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            child.signal_group(signal.SIGKILL)  # also reaps grandchildren that ignored SIGTERM
            child.process.wait()
        if self.redis is not None:
            self.redis.stop()


def banner(stack: Stack) -> str:
    """What a user copies: plain lines for stdout, never wrapped (rich would wrap them at 80 columns when stdout is
    not a terminal, splitting the export line in two), so `sqd up > up.log` keeps each one whole."""
    return (f"\n  Dashboard: {stack.base_url}/?token={stack.token}\n"
            f"  Scripts:   export SQD_URL={stack.base_url} SQD_TOKEN={stack.token}\n"
            "  Stop:      Ctrl-C\n")


def up(settings: Settings, port: int, on_ready: Callable[[Stack], None] | None = None) -> None:
    """Start everything, print the dashboard URL, supervise until Ctrl-C / SIGTERM, then stop everything."""
    stack = Stack(settings, port)

    def _stop(signum: int, _frame: object) -> None:
        stack.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        with console.status("starting sqd…"):
            stack.start()
            stack.wait_healthy()
        sys.stdout.write(banner(stack))
        sys.stdout.flush()
        console.print(stack.describe())
        if on_ready is not None:
            on_ready(stack)
        while not stack.stop_event.wait(1.0):
            stack.check_children()
    finally:
        console.print("stopping sqd…")
        stack.stop()
        console.print("stopped.")
