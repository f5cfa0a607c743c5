"""Every GPU figure of the project in one run: the Monitor's cost on a GPU step, the zoo's speed, the evaluation
profiles on the GPU. Each section is a module of this folder with `run(ctx: Context, report: Report) -> None`; a
section that fails is reported with its traceback and the others still run.

    bash bench/gpu/run.sh                        # on the device machine (installs the carried wheels first)
    .venv/bin/python bench/gpu/run.py --device cpu --quick   # dry run here: same code paths, reduced sizes
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
from report import Context, Report

# modules bench/gpu/section_<name>.py, with the seconds each needs on an H200
SECTIONS = {"monitor": 90, "zoo": 200, "eval": 100}


def describe(device: str) -> str:
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    return (f"# SQD GPU bench — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {gpu}, torch {torch.__version__}"
            f" (CUDA {torch.version.cuda}), Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/sqd-gpu-out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a dry run of every code path)")
    parser.add_argument("--budget-s", type=float, default=390.0, help="time for all sections together")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the sections, e.g. r3gan_dir=.r3gan")
    args = parser.parse_args()
    options = dict(o.split("=", 1) for o in args.option)
    report = Report(describe(args.device), out=args.out)
    print(report.header, flush=True)
    start = time.monotonic()
    for i, name in enumerate(args.sections):
        # each section gets its share of what is left, so one slow section cannot starve the rest
        left = args.budget_s - (time.monotonic() - start)
        share = SECTIONS[name] / sum(SECTIONS[n] for n in args.sections[i:])
        ctx = Context(args.device, args.quick, args.out, left * share, options)
        print(f"== {name} ({ctx.budget_s:.0f} s)", flush=True)
        t0 = time.monotonic()
        try:
            importlib.import_module(f"section_{name}").run(ctx, report)
        except Exception:
            report.add(name, "section failed", "error")
            report.note(f"{name}: " + traceback.format_exc(limit=8).replace("\n", " ⏎ "))
        report.note(f"section {name} took {time.monotonic() - t0:.0f} s")
        report.write(args.out)
    print(report.markdown(), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
