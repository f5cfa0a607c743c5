"""sqd.trainer: the GAN zoo, the training loop, the `Monitor` SDK and the trainer agent.

`Monitor` is imported lazily so that `import sqd.trainer.cli` (every `sqd` command) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqd.trainer.monitor import Monitor

__all__ = ["Monitor"]


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from sqd.trainer.monitor import Monitor

        return Monitor
    raise AttributeError(f"module 'sqd.trainer' has no attribute {name!r}")
