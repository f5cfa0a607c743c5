"""What `sqd train` does: parse `--set k=v`, resolve the config (or take a checkpoint's), train in the foreground
with a progress display (a bar on a terminal; a line per tick in a log file, e.g. under the trainer agent).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqd.errors import ConfigError
from sqd.presets import apply_overrides, resolve_config
from sqd.settings import Settings
from sqd.train_config import TrainConfig

LOG_LINE_EVERY_S = 10.0


def parse_sets(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.name=hinge",
                              [{"loc": [item], "msg": "expected KEY=VALUE"}])
        out[key.strip()] = value
    return out


def config_for(preset: str | None, overrides: dict[str, str], resume: Path | None,
               settings: Settings) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The preset's config with overrides, or, resuming, the checkpoint's config with the overrides on top."""
    if resume is None:
        if preset is None:
            raise ConfigError("give a PRESET (see `sqd presets`) or --resume CHECKPOINT",
                              [{"loc": ["preset"], "msg": "missing"}])
        return resolve_config(preset, overrides), None
    from sqd.trainer.checkpoint import read_checkpoint

    state = read_checkpoint(_checkpoint_bytes(resume, settings))
    return apply_overrides(state.get("config") or {}, overrides), state


def _checkpoint_bytes(ref: Path, settings: Settings) -> bytes | Path:
    """A local file, or an artifact key such as runs/<id>/checkpoints/step-000001000.pt."""
    if ref.is_file():
        return ref
    from sqd.artifacts import ArtifactStore

    return ArtifactStore.from_settings(settings).get_bytes(str(ref))


class Progress:
    """tqdm on a terminal; elsewhere one plain line every LOG_LINE_EVERY_S (log files stay readable)."""

    def __init__(self, first: int, last: int, stream: Any = None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.first, self.last = first, last
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(total=last - first + 1, unit="step", file=self.stream, dynamic_ncols=True) if self.tty \
            else None
        self.done, self.t0, self.t_line = first, time.perf_counter(), 0.0

    def __call__(self, step: int, values: dict[str, float]) -> None:
        shown = {k.removeprefix("loss/"): f"{v:.4g}" for k, v in values.items()}
        if self.bar is not None:
            self.bar.update(step + 1 - self.done)
            self.bar.set_postfix(shown, refresh=False)
        else:
            now = time.perf_counter()
            if now - self.t_line >= LOG_LINE_EVERY_S or step == self.last:
                rate = (step + 1 - self.first) / max(now - self.t0, 1e-9)
                losses = " ".join(f"{k}={v}" for k, v in shown.items())
                self.stream.write(f"step {step + 1}/{self.last + 1} {rate:.1f} steps/s {losses}\n")
                self.stream.flush()
                self.t_line = now
        self.done = step + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def progress(first: int, last: int) -> Iterator[Progress]:
    bar = Progress(first, last)
    try:
        yield bar
    finally:
        bar.close()
