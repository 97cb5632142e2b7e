"""The ``customcrafter`` command.

Each subcommand is a module here with ``add_parser(subparsers)`` and ``run(args)``; the
options of ``train``, ``generate`` and ``shapes train-base`` are made from the config
dataclasses. Building the parser imports no torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import UserError
from . import benchmark, convert, demo, generate, shapes, train
from . import eval as eval_command

COMMANDS = (train, generate, convert, shapes, eval_command, benchmark, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="customcrafter",
        description="Subject-customized text-to-video generation (CustomCrafter).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
