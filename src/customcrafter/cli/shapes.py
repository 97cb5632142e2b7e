"""``customcrafter shapes``: the shapes world's base model, trained and measured."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import SampleConfig
from ..shapes.recipe import BaseRecipe
from .args import add_config_arguments, bounded, config_values


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "shapes", help="the shapes world and the small model trained on it"
    )
    sub = parser.add_subparsers(dest="shapes_command", required=True)
    train = sub.add_parser(
        "train-base",
        help="train the shapes model from scratch (75 to 130 minutes on 2 CPU cores)",
    )
    train.add_argument("--out", required=True, help="run folder; the model lands in OUT/model")
    add_config_arguments(train, BaseRecipe)
    train.set_defaults(run=run_train_base)
    evaluate = sub.add_parser(
        "evaluate-base",
        help="how often the model's clips show the prompt's color, background and motion",
    )
    evaluate.add_argument("--base", default="shapes", help="base model (default: shapes)")
    evaluate.add_argument(
        "--seeds",
        type=bounded(int, minimum=1, maximum=1000),
        default=3,
        help="clips per held-out caption (default: 3)",
    )
    evaluate.add_argument("--out", help="also write the report as JSON here (a .json file)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    evaluate.add_argument(
        "--split",
        choices=["held-out", "train"],
        default="held-out",
        help="held-out captions (the figure to report) or training captions (for tuning)",
    )
    add_config_arguments(evaluate, SampleConfig, only=("num_inference_steps", "guidance_scale"))
    evaluate.set_defaults(run=run_evaluate_base)


def run_train_base(args: argparse.Namespace) -> None:
    from ..shapes.train_base import train_base

    recipe = BaseRecipe(**config_values(args, BaseRecipe))
    path = train_base(args.out, recipe, progress=not args.quiet)
    print(f"shapes model written to {path}; use it with --base {path}")


def run_evaluate_base(args: argparse.Namespace) -> None:
    from ..io.files import check_output_file, write_json
    from ..models import load_base_model
    from ..shapes.evaluate import evaluate_base, format_report

    SampleConfig(**config_values(args, SampleConfig)).validate()  # before the model loads
    if args.out:
        check_output_file(args.out, args.overwrite, (".json",), what="--out")
    report = evaluate_base(
        load_base_model(args.base),
        seeds=range(args.seeds),
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        split=args.split,
        progress=not args.quiet,
    )
    print(format_report(report))
    if args.out:
        write_json(Path(args.out), report)
