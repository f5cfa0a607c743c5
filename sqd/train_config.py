"""The training-config schema (pydantic, torch-free): what a preset resolves to and what travels in events.

Every section forbids unknown keys, so a typo in an override is an error rather than a silently ignored value.
Formulas and defaults: SPEC.md §2–§7. Cross-field rules (which losses an optimizer can play, which nets a
penalty can differentiate) live in `TrainConfig._consistent` and raise with the key that is wrong.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LossName = Literal["nsgan", "lsgan", "hinge", "wgan", "softhinge", "rpgan", "ogan"]
RegName = Literal["gp", "dragan", "zero_gp", "lp", "r1", "r2", "r1r2", "sn", "l2", "gran_d", "gran_c"]
DatasetName = Literal["stacked_digits", "celeba", "image_folder", "cifar10", "synthetic"]
ArchName = Literal["dcgan", "resnet", "r3gan"]

# Penalties that differentiate D per sample: BatchNorm in D mixes the samples of a batch, so ∇ₓD(x)ᵢ would
# carry the other samples' terms (WGAN-GP §4 drops BatchNorm from the critic for the same reason).
INPUT_GRADIENT_REGS = frozenset({"gp", "dragan", "zero_gp", "lp", "r1", "r2", "r1r2", "gran_d", "gran_c"})
# ACGD plays one shared scalar loss (SPEC §6): only zero-sum losses have one.
ZERO_SUM_LOSSES = frozenset({"wgan", "ogan"})
GRAN_LOSS = {"gran_d": "nsgan", "gran_c": "softhinge"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Section):
    name: DatasetName = Field("stacked_digits", description="synthetic: noise images of this shape, for speed "
                                                            "benches without the data")
    resolution: Literal[16, 32, 64, 128] = 16
    channels: Literal[1, 3] = 3
    root: str | None = Field(None, description="image folder / cifar-10-batches-py folder; default under "
                                               "$SQD_HOME/datasets (stacked_digits needs none)")
    crop: int | None = Field(None, ge=8, description="center crop side before resizing; default: the short side")
    size: int | None = Field(None, ge=1, description="stacked_digits: number of samples drawn once (default 60000)")


class ModelConfig(Section):
    arch: ArchName = "dcgan"
    width: int = Field(32, ge=4, le=2048, description="base channel width of G (and of D unless d_width)")
    d_width: int | None = Field(None, ge=4, le=2048, description="D's base width (a weaker or stronger D)")
    z_dim: int = Field(100, ge=1, le=4096)
    g_norm: Literal["batch", "none"] = "batch"
    d_norm: Literal["batch", "none"] = "none"
    blocks: int = Field(2, ge=1, le=8, description="resnet / r3gan: residual blocks per stage")
    group_size: int = Field(16, ge=1, description="r3gan: channels per group of the 3×3 conv")
    expansion: int = Field(2, ge=1, le=8, description="r3gan: inverted-bottleneck expansion")


class LossConfig(Section):
    name: LossName = "nsgan"
    clip: float | None = Field(None, gt=0, description="wgan only: clip D's weights to ±clip (off by default)")


class RegConfig(Section):
    names: list[RegName] = []
    lam: float = Field(10.0, ge=0, description="λ of gp / dragan / zero_gp / lp")
    gamma: float = Field(0.1, ge=0, description="γ of r1 / r2 / r1r2 (final value when burn-in ramps it)")
    dragan_c: float = Field(0.25, gt=0, description="DRAGAN noise variance c: δ ~ N(0, c·I) (our choice, docs)")
    gran_eps: float = Field(0.1, gt=0, description="GraN ε")
    gran_k: float = Field(1.0, gt=0, description="GraN K (1/K is the sigmoid temperature)")
    weight_decay: float = Field(1e-4, ge=0, description="l2: weight decay on D")

    @field_validator("names", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        # `--set reg.names=gp,r1` and `reg.names=none` are the natural spellings on a command line.
        if v is None:
            return []
        if isinstance(v, str):
            return [] if v.strip().lower() in ("", "none", "[]") else [s.strip() for s in v.split(",")]
        return v

    @field_validator("names", mode="after")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in v:
            if name in seen:
                raise ValueError(f"'{name}' is listed twice")
            seen.add(name)
        if {"r1r2"} & seen and {"r1", "r2"} & seen:
            raise ValueError("r1r2 already includes r1 and r2")
        if {"gran_d", "gran_c"} <= seen:
            raise ValueError("choose one of gran_d, gran_c")
        return v


class OptimConfig(Section):
    name: Literal["adam", "acgd"] = "adam"
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = Field(1e-8, gt=0)
    n_dis: int = Field(1, ge=1, le=100, description="D steps per G step (adam)")
    schedule: Literal["constant", "linear"] = Field("constant", description="linear: lr decays to 0 at the end")
    acgd_beta: float = Field(0.99, gt=0, lt=1, description="ACGD: second-moment decay β")
    acgd_tol: float = Field(1e-10, gt=0, description="ACGD: CG stops when ‖r‖² < tol·‖b‖²")
    acgd_atol: float = Field(1e-16, gt=0, description="ACGD: … or when ‖r‖² < atol")
    acgd_max_iter: int = Field(100, ge=1, description="ACGD: CG iteration cap per step")

    @field_validator("betas", mode="after")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must lie in [0, 1) (got {list(v)})")
        return v


class BurnInConfig(Section):
    """R3GAN's cosine burn-in (SPEC §5): v(t) ramps from the start value here to the final one over `steps`."""

    steps: int = Field(0, ge=0, description="T in generator steps; 0 = off")
    lr: float | None = Field(None, gt=0, description="start lr (both nets); None = constant")
    gamma: float | None = Field(None, ge=0, description="start γ of r1/r2")
    beta2: float | None = Field(None, ge=0, lt=1, description="start β₂")
    ema_half_life_images: float | None = Field(None, ge=0, description="start EMA half-life (images)")


class EmaConfig(Section):
    enabled: bool = False
    half_life_images: float = Field(10_000, ge=0, description="EMA half-life of G's weights, in images seen")


class TrainSection(Section):
    batch: int = Field(64, ge=1, le=4096)
    steps: int = Field(2000, ge=1, description="generator steps")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores, at most 4)")
    checkpoint_every: int | None = Field(500, ge=1, description="steps between checkpoints (each is evaluated); "
                                                                "null: none by steps")
    checkpoint_every_epochs: int | None = Field(
        None, ge=1, description="also a checkpoint at the end of every n-th epoch (1: an evaluation per epoch, so a "
                                "turning point is corroborated within the epoch after it)")
    log_every: int = Field(50, ge=1, description="steps per metric flush / progress update")
    # Speed (docs/zoo.md, "GPU speed"): fast defaults on CUDA, exact fp32 NCHW on the CPU.
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: autocast the nets' forward passes (losses, penalties and input gradients stay "
                            "fp32); auto: bf16 on CUDA (fp32 for ACGD), fp32 elsewhere")
    tf32: bool = Field(True, description="CUDA: TF32 matmuls and convolutions (fp32 accumulate)")
    channels_last: bool | None = Field(None, description="NHWC layout of nets and batches; default: on for CUDA")
    compile: bool = Field(False, description="torch.compile G and D where they need no double backward; eager "
                                             "with a warning where it fails")
    cuda_graphs: bool = Field(False, description="CUDA: capture one whole iteration and replay it (once the "
                                                 "burn-in is over); eager with a warning where it fails")
    loader_workers: int | None = Field(None, ge=0, le=64, description="image folders / CIFAR-10: DataLoader "
                                                                      "workers (default: 4 on CUDA, 0 on the CPU)")


class EvalConfig(Section):
    profile: Literal["digits", "faces", "none"] = "digits"


class TrainConfig(Section):
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    reg: RegConfig = RegConfig()
    optim: OptimConfig = OptimConfig()
    burnin: BurnInConfig = BurnInConfig()
    ema: EmaConfig = EmaConfig()
    train: TrainSection = TrainSection()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        regs = set(self.reg.names)
        if self.dataset.name == "stacked_digits" and self.dataset.channels != 3:
            raise ValueError("dataset.channels: stacked_digits has 3 channels (one digit per channel)")
        if self.model.d_norm == "batch" and regs & INPUT_GRADIENT_REGS:
            raise ValueError(f"model.d_norm: 'batch' mixes samples, so the per-sample input gradients of "
                             f"{', '.join(sorted(regs & INPUT_GRADIENT_REGS))} are undefined; use d_norm=none")
        for gran, loss in GRAN_LOSS.items():
            if gran in regs and self.loss.name != loss:
                raise ValueError(f"reg.names: {gran} is paired with loss.name={loss} (SPEC §4), "
                                 f"not {self.loss.name}")
        if self.loss.clip is not None and self.loss.name != "wgan":
            raise ValueError("loss.clip: weight clipping applies to loss.name=wgan only")
        if self.optim.name == "acgd":
            if self.loss.name not in ZERO_SUM_LOSSES:
                raise ValueError(f"loss.name: ACGD plays one shared loss, so it needs a zero-sum loss "
                                 f"({', '.join(sorted(ZERO_SUM_LOSSES))}), not {self.loss.name}")
            if regs - {"sn"}:
                raise ValueError(f"reg.names: ACGD trains the unregularized game (seed 002); only sn may be "
                                 f"combined with it, not {', '.join(sorted(regs - {'sn'}))}")
            if self.optim.n_dis != 1:
                raise ValueError("optim.n_dis: ACGD updates both players simultaneously; n_dis must be 1")
            if self.train.precision == "bf16":
                raise ValueError("train.precision: ACGD's conjugate-gradient solve (tolerance 1e-10 on "
                                 "Hessian-vector products) needs fp32; use fp32 or auto")
            for key in ("compile", "cuda_graphs"):
                if getattr(self.train, key):
                    raise ValueError(f"train.{key}: ACGD differentiates both nets twice and stops its solve on "
                                     f"host-side tests, which neither torch.compile nor a CUDA graph supports; "
                                     f"set train.{key}=false")
        if self.train.cuda_graphs and self.optim.schedule == "linear":
            raise ValueError("train.cuda_graphs: optim.schedule=linear changes the lr every step, which a captured "
                             "iteration would freeze; use schedule=constant or cuda_graphs=false")
        if self.model.arch == "r3gan" and (self.model.g_norm, self.model.d_norm) != ("none", "none"):
            raise ValueError("model.g_norm: the R3GAN network has no normalization; set g_norm and d_norm to none")
        if self.model.arch == "r3gan" and self.model.width * self.model.expansion % self.model.group_size:
            raise ValueError(f"model.group_size: {self.model.group_size} must divide the expanded width "
                             f"{self.model.width * self.model.expansion} (model.width × model.expansion)")
        return self
