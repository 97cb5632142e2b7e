"""How a setting is declared and checked: ``setting`` (a dataclass field with its help text,
flag and bounds), the bounds check, the conversion of what a command line or a config file
wrote, and the config files. ``config/__init__.py`` declares the settings with it."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any

import tomllib
import yaml
from pydantic import TypeAdapter, ValidationError

from ..errors import UserError


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    flag: str | None = None,
    metavar: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    slider_step: float | None = None,
    slider_max: float | None = None,
    repeat: bool = False,
) -> Any:
    """A dataclass field with its help text, its bounds and, where it differs from the
    field's name, its command-line flag in the metadata.

    ``minimum`` / ``maximum`` (inclusive) and ``above`` / ``below`` (exclusive): the values
    the setting takes, checked by :func:`check_bounds` wherever it is given (command line,
    config file, benchmark spec, the app). ``slider_step`` / ``slider_max``: how the app
    shows it as a slider (``slider_max`` where the setting itself has no ``maximum``).
    ``repeat``: a list given by repeating its flag, one item each (items that may hold
    commas: prompts), rather than comma-separated."""
    metadata = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "slider_step": slider_step,
        "slider_max": slider_max,
        "repeat": repeat,
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a setting (``--steps`` for ``num_inference_steps``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def number_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def out_of_bounds(value, minimum=None, maximum=None, above=None, below=None) -> str | None:
    """What is wrong with the number ``value`` under these bounds (``"must be at least 1,
    got 0"``), or ``None`` when nothing is."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be a number, got {value}"
    given, text = number_text(value), number_text
    if minimum is not None and value < minimum:
        most = f" (and at most {text(maximum)})" if maximum is not None else ""
        return f"must be at least {text(minimum)}{most}, got {given}"
    if minimum is not None and maximum is not None and value > maximum:
        return f"must be between {text(minimum)} and {text(maximum)}, got {given}"
    if maximum is not None and value > maximum:
        return f"must be at most {text(maximum)}, got {given}"
    if above is not None and value <= above:
        return f"must be more than {text(above)}, got {given}"
    if below is not None and value >= below:
        return f"must be below {text(below)}, got {given}"
    return None


def check_bounds(config, label=flag_of) -> None:
    """Refuse a number of the dataclass ``config`` that is not finite or lies outside its
    setting's bounds, naming it by ``label(field)`` (by default its flag)."""
    for f in fields(config):
        check_value(f, getattr(config, f.name), label(f))


def check_value(f: dataclasses.Field, value, name: str) -> None:
    """Refuse ``value`` for the setting ``f`` when it is a number that is not finite or lies
    outside the setting's bounds, calling it ``name``."""
    bounds = {k: f.metadata.get(k) for k in ("minimum", "maximum", "above", "below")}
    problem = out_of_bounds(value, **bounds)
    if problem is not None:
        raise UserError(f"{name} {problem}")


def field_named(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of the dataclass ``cls``."""
    return next(f for f in fields(cls) if f.name == name)


def field_kind(hint) -> type:
    """The kind of a setting's type hint: ``int | None`` -> ``int``, ``list[str]`` -> ``list``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return field_kind(next(a for a in typing.get_args(hint) if a is not type(None)))
    return typing.get_origin(hint) or hint


def split_items(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``: a list setting written as text."""
    return [item.strip() for item in text.split(",") if item.strip()]


def split_pair(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``("KEY", "VALUE")``: one entry of a mapping setting; a
    ``ValueError`` says what it takes."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def normalize(config) -> None:
    """Give every field of the dataclass ``config`` its declared type, converting what a
    config file or the command line wrote as text (``"1e-4"``), or raise ``UserError``
    naming the setting."""
    try:
        checked = TypeAdapter(type(config)).validate_python(dataclasses.asdict(config))
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = ".".join(str(part) for part in problem["loc"])
        raise UserError(
            f"setting {name} = {problem['input']!r}: {problem['msg'].lower()}"
        ) from None
    for f in fields(config):
        setattr(config, f.name, getattr(checked, f.name))


def _one_of(value: str, choices: tuple[str, ...], flag: str, what: str = "") -> None:
    if value not in choices:
        raise UserError(f"{flag} must be {what or ', '.join(choices)}; got {value!r}")


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of a config dataclass."""
    return field_named(cls, name).metadata["help"]


def default_device(device: str | None = None) -> str:
    """``device`` checked to exist on this machine, or ``cuda`` when there is one, else
    ``cpu``."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(str(device)).type
    except (RuntimeError, ValueError):
        raise UserError(
            f"--device {device!r} is not a device; use cpu, cuda, cuda:1 or mps"
        ) from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if kind in available and not available[kind]():
        raise UserError(f"--device {device}: this machine has no {kind} device; use --device cpu")
    return str(device)


def default_dtype(name: str | None, device: str):
    """The torch dtype called ``name``; by default float16 on CUDA, float32 elsewhere."""
    import torch

    return getattr(torch, name or ("float16" if device.startswith("cuda") else "float32"))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML config file into a dict of field names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"could not parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of setting names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def merge_config(cls: type, *layers: dict[str, Any]):
    """Build ``cls`` from dicts applied in order (later wins), every value converted to its
    field's type; unknown keys and values of the wrong type are a ``UserError``."""
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(
                    f"unknown setting {key!r}{hint}; known settings: {', '.join(sorted(names))}"
                )
            values[key] = value
    config = cls(**values)
    normalize(config)
    return config


def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
