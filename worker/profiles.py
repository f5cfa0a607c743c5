"""Evaluation profiles: what a worker measures on a checkpoint's generated images.

A profile is built once per worker process (it loads its models then) and called once per checkpoint with a
`sample` function: `sample(n)` returns n generated images, a float tensor (n, C, H, W) in [−1, 1] on the worker's
device, generated in batches and deterministic per call (the same z every time for a given checkpoint), so a
profile that needs 2,000 images for diversity and 1,000 for quality may ask twice and gets the same first 1,000.
The profile adds its per-stage wall-clock seconds to `timings` (e.g. "classify", "mtcnn", "embed",
"fid_features") and returns its metrics under the DESIGN.md keys:

    eval/quality, eval/diversity (James–Stein, nats), eval/diversity_plugin, eval/modes_covered, eval/js_lambda,
    eval/reverse_kl (digits), eval/fid, eval/no_face_fraction (faces)

Raising `ModelFileMissing`, `ValueError` or `ArtifactError` marks the evaluation failed (with the message shown
in the UI); raising `sqd.bus.TransientError` retries the checkpoint later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sqd.errors import ConfigError
from sqd.settings import Settings

if TYPE_CHECKING:
    import torch

Sampler = Callable[[int], "torch.Tensor"]

PROFILES = ("digits", "faces")
NO_PROFILE = "none"  # CheckpointReady.profile for runs without an evaluation: only the sample grid is made


class EvaluationProfile(Protocol):
    name: str

    def evaluate(self, sample: Sampler, timings: dict[str, float]) -> dict[str, float]: ...


def get_profile(name: str, settings: Settings, device: str | torch.device = "cpu") -> EvaluationProfile:
    """Build the named profile (loading its models); unknown names raise ConfigError listing the allowed ones."""
    if name == "digits":
        from sqd.worker.digits import DigitsProfile

        return DigitsProfile(settings, device)
    if name == "faces":
        from sqd.worker.faces import FacesProfile  # type: ignore[import-not-found,unused-ignore]

        return FacesProfile(settings, device)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"evaluation profile {name!r} is not one of {', '.join(PROFILES)} (or {NO_PROFILE!r})",
                      [{"loc": ["profile"], "msg": f"must be one of {', '.join((*PROFILES, NO_PROFILE))}"}])
