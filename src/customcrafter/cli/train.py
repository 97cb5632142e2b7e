"""``customcrafter train``: learn a subject from a few photos."""

from __future__ import annotations

import argparse

from ..config import TrainConfig, load_config_file, merge_config
from ..errors import UserError
from .args import add_config_arguments, config_values

REQUIRED = ("instance_data_dir", "instance_prompt", "output_dir")
VRAM_HELP = (
    "fit the run in this much GPU memory (auto: the visible GPU's free memory): the memory "
    "plan (customcrafter plan) chooses --weights-dtype, --text-encoder-dtype, "
    "--gradient-checkpointing and --offload-blocks, replacing those given, and says what it chose"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="learn a subject from a few photos")
    parser.add_argument(
        "--config", help="YAML, JSON or TOML file of settings (options override it)"
    )
    add_config_arguments(parser, TrainConfig, keep_unset=True)
    parser.add_argument("--vram", metavar="auto|GB", help=VRAM_HELP)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..training import train

    file_values = load_config_file(args.config) if args.config else {}
    config = merge_config(TrainConfig, file_values, config_values(args, TrainConfig))
    for name in REQUIRED:
        if not getattr(config, name):
            raise UserError(f"--{name.replace('_', '-')} is required")
    if args.vram is not None:
        from ..planning.plan import fit_training, parse_vram

        config.validate()
        config, chosen = fit_training(config, parse_vram(args.vram))
        print(chosen)
    path = train(config, progress=not args.quiet)
    print(f"subject module written to {path}")
