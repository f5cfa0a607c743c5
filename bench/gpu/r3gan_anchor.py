"""The official R3GAN (brownvc/R3GAN) at an SQD shape, for section_zoo.py: the anchor SQD's R3GAN step is held to.

Its code is never in this repository: it is imported from a directory (`--option r3gan_dir=…`, default .r3gan,
an ignored folder carried to the device machine) holding its R3GAN/, torch_utils/ and dnnlib/ folders.

- `start_build(r3gan_dir, ext_dir)` builds its two custom CUDA ops (bias_act, upfirdn2d: nvcc + ninja) in two
  background processes, so the build (CPU) overlaps the GPU rows; `Build.wait()` gives its seconds and errors.
  The main process then loads the built extensions from the same TORCH_EXTENSIONS_DIR.
- `OfficialStep` builds its Generator / Discriminator with the widths, cardinality (expanded width / 16) and
  blocks per stage of SQD's one-width R3GAN, bf16 stages as its FFHQ-64 preset sets them (every stage but the
  4×4 one), and runs one iteration the way its training loop does: D phase (AccumulateDiscriminatorGradients:
  RpGAN + R1 + R2, γ), Adam, G phase (AccumulateGeneratorGradients), Adam (β₁ 0, β₂ 0.99, ε 1e-8), an EMA lerp of
  G; TF32 off and cudnn.benchmark on, as its training loop sets them. Batches are synthetic, made once.
- Its dnnlib imports `requests` and `distutils.util.strtobool`, its gradfix ops `pkg_resources.parse_version`;
  where the machine lacks them (Python 3.12 has no distutils; setuptools may be absent) small stand-ins are
  registered first (nothing on the timed path calls them but the version test).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

OPS = ("bias_act", "upfirdn2d")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _stand_ins() -> None:
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        pkg = types.ModuleType("pkg_resources")
        pkg.parse_version = _version  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = pkg
    try:
        from distutils.util import strtobool  # noqa: F401
    except ImportError:
        distutils, util = types.ModuleType("distutils"), types.ModuleType("distutils.util")
        util.strtobool = lambda v: str(v).lower() in ("y", "yes", "t", "true", "on", "1")  # type: ignore[attr-defined]
        distutils.util = util  # type: ignore[attr-defined]
        sys.modules.update({"distutils": distutils, "distutils.util": util})
    _register_loaded_extensions()


def _register_loaded_extensions() -> None:
    """StyleGAN3's custom_ops imports a plugin by name right after `torch.utils.cpp_extension.load` built it, which
    worked while `load` put the module into sys.modules; newer torch returns it without doing so (a build that
    succeeded then failed with "No module named 'bias_act_plugin'" on torch 2.11). Register it as old torch did."""
    import torch.utils.cpp_extension as cpp

    if getattr(cpp.load, "_sqd_registers", False):
        return
    original = cpp.load

    def load(name: str, *args: Any, **kwargs: Any) -> Any:
        module = original(name, *args, **kwargs)
        if isinstance(module, types.ModuleType):
            sys.modules.setdefault(name, module)
        return module

    load._sqd_registers = True  # type: ignore[attr-defined]
    cpp.load = load


def _import_path(r3gan_dir: Path) -> None:
    _stand_ins()
    if str(r3gan_dir) not in sys.path:
        sys.path.insert(0, str(r3gan_dir))


def build_env(ext_dir: Path) -> dict[str, str]:
    """TORCH_EXTENSIONS_DIR shared by the build processes and this one; ninja on PATH where the machine has none
    (the `ninja` wheel prepare.sh carries installs its binary as <target>/bin/ninja next to the packages)."""
    env = {"TORCH_EXTENSIONS_DIR": str(ext_dir)}
    if shutil.which("ninja") is None:
        found = [Path(p).parent / "bin" if Path(p).name == "site-packages" else Path(p) / "bin" for p in sys.path]
        binary = next((d for d in found if (d / "ninja").is_file() and os.access(d / "ninja", os.X_OK)), None)
        if binary is not None:
            env["PATH"] = f"{binary}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


_BUILD = """
import sys, time
sys.path.insert(0, {here!r})
import r3gan_anchor
r3gan_anchor._import_path(__import__("pathlib").Path({r3gan_dir!r}))
start = time.time()
from torch_utils.ops import {op}
{op}._init()
print(f"{op} built in {{time.time() - start:.1f}} s", flush=True)
"""


@dataclass
class Build:
    procs: dict[str, subprocess.Popen[str]]
    started: float = field(default_factory=time.monotonic)

    def wait(self, timeout: float) -> tuple[float, list[str]]:
        """(seconds the build took, errors); a build still running after `timeout` is stopped and reported."""
        errors = []
        deadline = time.monotonic() + timeout
        for op, proc in self.procs.items():
            try:
                out, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                errors.append(f"{op}: build not done after {timeout:.0f} s")
                continue
            if proc.returncode != 0:
                tail = " ⏎ ".join(out.strip().splitlines()[-6:])
                errors.append(f"{op}: build failed (exit {proc.returncode}): {tail}")
        return time.monotonic() - self.started, errors


def start_build(r3gan_dir: Path, ext_dir: Path) -> Build:
    ext_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **build_env(ext_dir)}
    here = str(Path(__file__).resolve().parent)
    procs = {op: subprocess.Popen([sys.executable, "-c", _BUILD.format(here=here, r3gan_dir=str(r3gan_dir), op=op)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for op in OPS}
    return Build(procs)


def load_ops(r3gan_dir: Path, ext_dir: Path) -> float:
    """Loads the built ops into this process (seconds); raises where they do not load."""
    os.environ.update(build_env(ext_dir))
    _import_path(r3gan_dir)
    start = time.monotonic()
    from torch_utils.ops import bias_act, upfirdn2d  # type: ignore[import-not-found]

    bias_act._init()
    upfirdn2d._init()
    return time.monotonic() - start


def use_reference_ops(r3gan_dir: Path) -> None:
    """Its own reference (pure PyTorch) bias_act and resamplers in place of the CUDA ops (a failed build)."""
    _import_path(r3gan_dir)
    import R3GAN.FusedOperators as fused  # type: ignore[import-not-found]
    import R3GAN.Networks as networks  # type: ignore[import-not-found]
    import R3GAN.Resamplers as resamplers  # type: ignore[import-not-found]

    networks.BiasedActivation = fused.BiasedActivationReference
    networks.InterpolativeUpsampler = resamplers.InterpolativeUpsamplerReference
    networks.InterpolativeDownsampler = resamplers.InterpolativeDownsamplerReference


class OfficialStep:
    """One official training iteration at (width, resolution, batch): `step()`; G and D for parameter counts."""

    def __init__(self, r3gan_dir: Path, width: int, resolution: int, batch: int, device: torch.device,
                 gamma: float = 0.1, group_size: int = 16, blocks: int = 2, expansion: int = 2, z_dim: int = 64):
        _import_path(r3gan_dir)
        from R3GAN.Networks import Discriminator, Generator  # type: ignore[import-not-found]
        from R3GAN.Trainer import AdversarialTraining  # type: ignore[import-not-found]

        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        stages = int(round(torch.log2(torch.tensor(resolution / 4)).item())) + 1
        widths, cardinality = [width] * stages, [width * expansion // group_size] * stages
        kwargs: dict[str, Any] = {"WidthPerStage": widths, "CardinalityPerStage": cardinality,
                                  "BlocksPerStage": [blocks] * stages, "ExpansionFactor": expansion}
        torch.manual_seed(0)
        self.G = Generator(NoiseDimension=z_dim, **kwargs).to(device)
        self.D = Discriminator(**kwargs).to(device)
        for i in range(1, stages):  # its FFHQ-64 preset: bf16 in every stage but the 4×4 one
            self.G.MainLayers[i].DataType = torch.bfloat16
            self.D.MainLayers[i - 1].DataType = torch.bfloat16
        self.G.requires_grad_(False)
        self.D.requires_grad_(False)
        self.G_ema = [p.detach().clone() for p in self.G.parameters()]
        self.trainer = AdversarialTraining(self.G, self.D)
        adam = {"lr": 2e-4, "betas": (0.0, 0.99), "eps": 1e-8}
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.gamma = gamma
        self.device = device
        self.z = torch.randn(2, batch, z_dim, device=device)
        self.real = torch.rand(2, batch, 3, resolution, resolution, device=device).mul_(2).sub_(1)

    def step(self) -> None:
        self.opt_d.zero_grad(set_to_none=True)
        self.D.requires_grad_(True)
        self.trainer.AccumulateDiscriminatorGradients(self.z[0], self.real[0], None, self.gamma)
        self.D.requires_grad_(False)
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.G.requires_grad_(True)
        self.trainer.AccumulateGeneratorGradients(self.z[1], self.real[1], None)
        self.G.requires_grad_(False)
        self.opt_g.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.G_ema, list(self.G.parameters()), 1 - 0.999)

    def params(self) -> int:
        return sum(p.numel() for p in self.G.parameters()) + sum(p.numel() for p in self.D.parameters())
