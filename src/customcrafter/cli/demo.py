"""``customcrafter demo``: learn a subject and generate videos, offline, on the CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import bounded


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="learn a subject and generate videos, offline, on the CPU"
    )
    parser.add_argument("--output-dir", default="demo-output")
    parser.add_argument(
        "--steps",
        type=bounded(int, minimum=1, maximum=100_000),
        default=300,
        help="subject-module training steps (default: 300)",
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..shapes.demo import run_demo

    run_demo(
        Path(args.output_dir), steps=args.steps, overwrite=args.overwrite, progress=not args.quiet
    )
