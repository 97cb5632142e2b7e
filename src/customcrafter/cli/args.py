"""Command-line options made from the config dataclasses, one option per field, with the help
text and bounds of the field's metadata (``config.setting``); the parser every command
uses; and number types with declared bounds for the options that are no setting."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from ..config import field_kind, flag_of, number_text, out_of_bounds, split_items, split_pair
from ..errors import UserError


class UsageError(UserError):
    """The command line does not parse: a missing or unknown option, a value of the wrong
    type or out of its range."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are ``UserError``s, so that every bad command line
    ends as one ``error:`` line with exit code 2, like every other bad input."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def bounded(kind: type, **bounds):
    """An argparse ``type`` for a number of ``kind`` within ``bounds`` (``minimum``,
    ``maximum``, ``above``, ``below``), for options that are no config setting."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a {kind.__name__}, got {text!r}") from None
        problem = out_of_bounds(value, **bounds)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def range_text(metadata) -> str:
    """A setting's bounds for its help text: ``1 to 100``, ``at least 1``, ``0 or more and
    below 1``."""
    low, high = metadata.get("minimum"), metadata.get("maximum")
    above, below = metadata.get("above"), metadata.get("below")
    parts = []
    if low is not None and high is not None:
        parts.append(f"{number_text(low)} to {number_text(high)}")
    elif low is not None:
        parts.append(f"at least {number_text(low)}")
    elif high is not None:
        parts.append(f"at most {number_text(high)}")
    if above is not None:
        parts.append(f"more than {number_text(above)}")
    if below is not None:
        parts.append(f"below {number_text(below)}")
    return " and ".join(parts)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    keep_unset: bool = False,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> None:
    """One option per field of dataclass ``cls`` (``--learning-rate`` for
    ``learning_rate``; a bool gets ``--x`` / ``--no-x``, a list takes comma-separated items,
    a dict repeated ``KEY=VALUE``). With ``keep_unset``, options not given are left out of
    the parsed namespace, so that a config file can fill them. ``only``: these fields alone.
    The bounds are checked after parsing (``config.check_bounds``), under the flag's name."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        kind = hints[f.name]
        flag = flag_of(f)
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help", "")
        notes = [f"default: {default}"] if default not in (None, "") else []
        limits = range_text(f.metadata)
        if limits:
            notes.append(limits)
        if notes:
            help_text += f" ({'; '.join(notes)})"
        options: dict[str, Any] = {
            "dest": f.name,
            "help": help_text,
            "default": argparse.SUPPRESS if keep_unset else default,
        }
        if f.metadata.get("metavar"):
            options["metavar"] = f.metadata["metavar"]
        base = field_kind(kind)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        elif base is dict:
            parser.add_argument(flag, action="append", type=_pair, **options)
        elif base is list and f.metadata.get("repeat"):
            parser.add_argument(flag, action="append", **options)
        elif base is list:
            parser.add_argument(flag, type=split_items, **options)
        else:
            parser.add_argument(flag, type=base, **options)


def config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that ``args`` holds, as the dataclass takes them."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if field_kind(hints[name]) is dict and isinstance(value, list):
            values[name] = dict(value)
    return values


def _pair(text: str) -> tuple[str, str]:
    try:
        return split_pair(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
