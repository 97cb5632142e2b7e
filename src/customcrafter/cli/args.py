"""Command-line options made from the config dataclasses, one option per field, with the help
text of the field's metadata (``config.setting``)."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from ..config import field_kind, split_items, split_pair


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    keep_unset: bool = False,
    skip: tuple[str, ...] = (),
) -> None:
    """One option per field of dataclass ``cls`` (``--learning-rate`` for
    ``learning_rate``; a bool gets ``--x`` / ``--no-x``, a list takes comma-separated items,
    a dict repeated ``KEY=VALUE``). With ``keep_unset``, options not given are left out of
    the parsed namespace, so that a config file can fill them."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help", "")
        if default not in (None, ""):
            help_text += f" (default: {default})"
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
