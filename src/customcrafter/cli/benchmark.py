"""``customcrafter benchmark``: run a benchmark spec (train, generate, score, report).

    customcrafter benchmark benchmarks/specs/paper_table1.yaml --data-root ~/datasets \\
        --set vc2_checkpoint=~/ckpt/vc2/model.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DTYPES


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark",
        help="run a benchmark spec: train, generate, score and report (resumable)",
        description="Run the benchmark a spec file describes. Finished modules, videos and "
        "scores are kept: run the same command again to continue an interrupted run.",
    )
    parser.add_argument("spec", help="benchmark spec (YAML or TOML), e.g. benchmarks/specs/*.yaml")
    parser.add_argument(
        "--data-root", help="folder holding the subjects' image folders (replaces the spec's)"
    )
    parser.add_argument("--output-dir", help="where results go (replaces the spec's output_dir)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a spec variable (vc2_checkpoint=/path/model.ckpt) or a spec key "
        "(generation.num_inference_steps=25, methods.NAME.train.max_train_steps=500); "
        "repeatable",
    )
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="sampling precision (default: float16 on cuda, else float32)",
    )
    parser.add_argument(
        "--reports-only",
        action="store_true",
        help="only rewrite the reports from the finished videos' cached scores",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> Path:
    from ..benchmark import load_spec, run_benchmark, write_reports

    spec = load_spec(
        args.spec,
        data_root=args.data_root,
        overrides=list(args.overrides or []),
        output_dir=args.output_dir,
    )
    if args.reports_only:
        out = write_reports(spec)
    else:
        import torch

        out = run_benchmark(
            spec,
            device=args.device,
            progress=not getattr(args, "quiet", False),
            dtype=getattr(torch, args.dtype) if args.dtype else None,
        )
    from ..processes import state

    if state().is_main_process:
        print(f"reports in {out}: summary.md, summary.csv, per_video.csv, index.html, charts/")
    return out
