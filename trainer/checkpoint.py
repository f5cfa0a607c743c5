"""Checkpoint files (the `sqd-checkpoint/1` contract): bytes in and out, rebuilding G, restoring RNG state.

    {"format": "sqd-checkpoint/1", "generator": spec, "G": state_dict, "G_ema": state_dict | None, "D": ...,
     "discriminator": spec, "optim": {...}, "step": int, "epoch": int, "config": dict, "rng": {...}}

Everything in it is tensors, dicts, lists and numbers, so it loads with `weights_only=True` (no pickled code).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sqd.errors import ArtifactError
from sqd.trainer.nets import build_generator

FORMAT = "sqd-checkpoint/1"
REQUIRED = ("generator", "G", "step")


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return buf.getvalue()


def read_checkpoint(data: bytes | str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; ArtifactError says what is wrong with a corrupt or foreign file."""
    what = str(data) if isinstance(data, str | Path) else f"{len(data)} bytes"
    try:
        source: Any = Path(data) if isinstance(data, str | Path) else io.BytesIO(data)
        state = torch.load(source, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise ArtifactError(f"checkpoint {what}: file not found") from exc
    except Exception as exc:  # torch raises many types for truncated / non-torch data
        raise ArtifactError(f"checkpoint {what}: not a readable torch checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ArtifactError(f"checkpoint {what}: format is {found!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED if state.get(k) is None]
    if missing:
        raise ArtifactError(f"checkpoint {what}: missing {', '.join(missing)}")
    return state


def load_generator(data: bytes | str | Path | dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The checkpoint's generator (its EMA weights when present) in eval mode, without gradients."""
    state = data if isinstance(data, dict) else read_checkpoint(data)
    G = build_generator(state["generator"])
    weights = state.get("G_ema") or state["G"]
    try:
        G.load_state_dict(weights)
    except RuntimeError as exc:
        raise ArtifactError(f"checkpoint: weights do not fit generator spec {state['generator']}: "
                            f"{str(exc).splitlines()[0]}") from exc
    return G.to(device).eval().requires_grad_(False)


def capture_rng(data_state: torch.Tensor) -> dict[str, Any]:
    """The global RNG states and the data generator's (`data_state`, from the trainer's batch stream)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_state}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> torch.Tensor:
    """Restores the global RNG states; returns the data generator's state for the batch stream."""
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return rng["data"]
