"""One training run as a child process of the agent, in its own process group.

The command runs under a small `sh` wrapper that records its exit status in a file, so that the status survives
the agent: an agent that restarts finds its runs by process group (still alive → watch it) and reads how they
ended from the exit file. Cancelling signals the whole group, SIGTERM first, SIGKILL after the grace period; the
wrapper traps SIGTERM (a trap with a command is not inherited, unlike an ignored signal) and waits for the trainer,
so even a cancelled run's status is recorded. (A background job of a non-interactive shell ignores SIGINT: runs are
stopped with SIGTERM only.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

_WRAPPER = """trap ':' TERM
"$0" "$@" & pid=$!
while kill -0 $pid 2>/dev/null; do wait $pid; done
wait $pid; code=$?
echo $code > "$SQD_EXIT_FILE"; exit $code
"""
TAIL_BYTES = 16_000


@dataclass
class RunProcess:
    pgid: int
    exit_file: Path
    popen: subprocess.Popen[bytes] | None = None  # None when re-attached after an agent restart

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str], log_path: Path, exit_file: Path) -> RunProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        exit_file.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(["/bin/sh", "-c", _WRAPPER, *argv], env={**env, "SQD_EXIT_FILE": str(exit_file)},
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return cls(popen.pid, exit_file, popen)

    def alive(self) -> bool:
        """True while any process of the group is left (the trainer may outlive the shell when signalled)."""
        if self.popen is not None:
            self.popen.poll()  # reap the shell so that it does not linger as a zombie
        else:
            try:  # re-attached: the shell is our child only if this process started it (then reap it)
                os.waitpid(self.pgid, os.WNOHANG)
            except ChildProcessError:
                pass
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def exit_code(self) -> int | None:
        """The trainer's exit status, or None when it was killed before the shell could record it."""
        try:
            return int(self.exit_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def tail(path: Path, max_bytes: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def describe_exit(code: int | None) -> str:
    if code is None:
        return "ended without an exit status"
    if code > 128:  # the shell reports a child killed by signal n as 128 + n
        try:
            return f"killed by signal {code - 128} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exited with code {code}"


def failure_summary(log_tail: str, code: int | None) -> tuple[str, str]:
    """(error, traceback) of a failed run: the last traceback in its log (else the log's end) and its last line."""
    start = log_tail.rfind("Traceback (most recent call last):")
    trace = log_tail[start:] if start >= 0 else log_tail[-4000:]
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    how = describe_exit(code)
    return (f"{lines[-1]} ({how})" if lines else f"training process {how}"), trace
