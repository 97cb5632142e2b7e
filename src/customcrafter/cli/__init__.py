"""The ``customcrafter`` command.

Each subcommand is a module here with ``add_parser(subparsers)`` and ``run(args)``; the
options of ``train``, ``generate`` and ``shapes train-base`` are made from the config
dataclasses. Building the parser imports no torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

import customcrafter

from ..errors import UserError
from . import app, benchmark, convert, demo, export, generate, plan, probe, shapes, train
from . import eval as eval_command
from .args import CommandParser

COMMANDS = (
    train,
    generate,
    plan,
    export,
    convert,
    shapes,
    eval_command,
    probe,
    benchmark,
    demo,
    app,
)
EXIT_CODES = """exit codes:
  0    done
  2    bad input: the one-line error says what to change; nothing of yours was touched
  130  interrupted (Ctrl-C); what was written is intact and resumes
  1    a bug in CustomCrafter: please report it with the traceback it prints"""


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="customcrafter",
        description="Subject-customized text-to-video generation (CustomCrafter).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--version", action="version", version=f"customcrafter {customcrafter.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _leave_process_group() -> None:
    """Under torchrun or accelerate launch: wait for the other processes (the main one may
    still be writing reports) and close the group, so that no process exits with the
    group's threads still running (an abort that would fail the whole launch)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
        _leave_process_group()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        from ..io.files import NO_SPACE, disk_full

        if exc.errno not in NO_SPACE:
            return _bug(exc)
        print(f"error: {disk_full(exc.filename or 'a file')}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else is ours to fix
        return _bug(exc)
    return 0


def _bug(exc: BaseException) -> int:
    traceback.print_exc()
    print(
        f"error: {type(exc).__name__}: {exc}\nThis is a bug in CustomCrafter, not in your "
        "input: please report it with the traceback above and the command you ran.",
        file=sys.stderr,
    )
    return 1
