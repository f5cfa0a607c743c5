"""StyleGAN2/3 and R3GAN statistic names → SQD metric keys (DESIGN.md's namespace). Their training loops report
through `training_stats` (`Loss/G/loss`, `Loss/r1_penalty`, `Progress/kimg`, `Timing/sec_per_kimg`, …) into
`stats.jsonl` and TensorBoard, and metric results as `Metrics/<metric>` (`fid50k_full`, …).

* `Loss/G/loss`, `Loss/D/loss` → `loss/G`, `loss/D`; any other `Loss/<rest>` → `loss/<rest>`.
* `Metrics/fid50k_full` (and `fid50k`, `fid10k`, `fid10k_full`) → `eval/fid`; any other `Metrics/<m>` → `eval/<m>`.
* the other groups keep their name with the group lower-cased: `Progress/kimg` → `progress/kimg`.
* a name in none of these forms (a user's own TensorBoard tag) is kept as it is.
"""

from __future__ import annotations

FID_METRICS = ("fid50k_full", "fid50k", "fid10k_full", "fid10k")  # the last three: older StyleGAN runs
GROUPS = ("Progress", "Timing", "Resources", "Augment")


def metric_key(name: str) -> str:
    group, _, rest = name.partition("/")
    if not rest:
        return name
    if group == "Loss":
        return {"G/loss": "loss/G", "D/loss": "loss/D"}.get(rest, f"loss/{rest}")
    if group == "Metrics":
        return "eval/fid" if rest in FID_METRICS else f"eval/{rest}"
    if group in GROUPS:
        return f"{group.lower()}/{rest}"
    return name


def kimg_step(kimg: float, unit: str) -> int:
    """StyleGAN counts training in thousands of real images shown (kimg). SQD's step is an integer: kimg itself
    (as StyleGAN's own TensorBoard export does, `global_step = int(kimg)`) or images shown (`nimg`)."""
    return int(round(kimg * 1000)) if unit == "nimg" else int(kimg + 1e-9)
