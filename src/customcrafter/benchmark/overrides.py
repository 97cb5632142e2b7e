"""A spec's variables and ``--set`` overrides, applied to its raw mapping before it is read.

``--set NAME=VALUE`` sets a declared variable (``variables: {vc2_checkpoint: null}``, used as
``${vc2_checkpoint}``); a variable is also read from ``$CUSTOMCRAFTER_<NAME>``. Any other
``--set KEY=VALUE`` is a dotted path into the spec (``generation.num_inference_steps=25``,
``methods.NAME.train.max_train_steps=500``: list entries by index, name or folder name),
whose value is read as YAML.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ..errors import UserError
from ..io.files import slug

ENV_PREFIX = "CUSTOMCRAFTER_"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: where a variable may stay unset until a model must be loaded
UNSET_ALLOWED = re.compile(r"(base|base_config|methods\[\d+\]\.base)")


def suggest(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known word closest to ``word``, or nothing."""
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def slugify(name: str) -> str:
    """A folder name for ``name``: lower case, runs of other characters as ``-``."""
    return slug(name, empty="x")


def unset_message(name: str) -> str:
    return (
        f"the variable {name} is not set: pass --set {name}=VALUE "
        f"or set the environment variable {ENV_PREFIX}{name.upper()}"
    )


def apply_overrides(
    data: dict, overrides: Mapping[str, str] | Iterable[str] | None, top_keys: Iterable[str]
) -> tuple[dict, dict[str, str | None]]:
    """``(the spec with overrides applied and variables substituted, variable values)``.

    ``data`` is the raw spec (it is changed); ``top_keys`` the keys a spec may have.
    """
    if isinstance(overrides, Mapping):
        pairs = [(str(k), str(v)) for k, v in overrides.items()]
    else:
        pairs = [_parse_override(item) for item in (overrides or [])]
    declared = data.get("variables") or {}
    if not isinstance(declared, Mapping):
        raise UserError(f"variables must be a mapping of names to values, got {declared!r}")
    variable_values = {}
    for key, value in pairs:
        if key in declared:
            variable_values[key] = value
        else:
            _apply_path_override(data, key, value, list(top_keys))
    values = _resolve_variables(dict(declared), variable_values)
    unset: list[tuple[str, str]] = []
    raw = {k: v for k, v in data.items() if k != "variables"}
    substituted = _substitute(raw, values, "", unset)
    for where, name in unset:
        if not UNSET_ALLOWED.fullmatch(where):
            raise UserError(f"{where}: {unset_message(name)}")
    return substituted, values


def unset_variables(text: str | None) -> list[str]:
    """The ``${...}`` names still in ``text`` (variables nobody set)."""
    return [] if not text else VARIABLE.findall(text)


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def _apply_path_override(data: dict, key: str, raw: str, top_keys: list[str]) -> None:
    parts = key.split(".")
    if parts[0] not in top_keys:
        raise UserError(
            f"--set {key}: {parts[0]!r} is neither a variable of the spec nor a spec key"
            f"{suggest(parts[0], top_keys)}; spec keys: {', '.join(top_keys)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise UserError(f"--set {key}: {where} is not a mapping or a list")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise UserError(f"--set {key}: cannot set a key inside {node!r}")


def _list_index(items: list, part: str, key: str) -> int:
    if part.lstrip("-").isdigit() and -len(items) <= int(part) < len(items):
        return int(part)
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if part in names:
        return names.index(part)
    slugs = [slugify(str(name)) if name is not None else None for name in names]
    if part in slugs:
        return slugs.index(part)
    raise UserError(f"--set {key}: no entry {part!r}; give an index or one of: {names}")


def _resolve_variables(declared: dict, overrides: dict[str, str]) -> dict[str, str | None]:
    """Variable values: ``--set`` first, then ``$CUSTOMCRAFTER_<NAME>``, then the default."""
    values: dict[str, str | None] = {}
    for name, default in declared.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise UserError(f"variables: {name!r} is not a valid name (letters, digits, _)")
        env = os.environ.get(ENV_PREFIX + str(name).upper())
        value = overrides.get(name, env if env else default)
        values[name] = None if value is None else str(value)
    return values


def _substitute(node, values: dict[str, str | None], where: str, unset: list[tuple[str, str]]):
    if isinstance(node, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in values:
                known = ", ".join(values) or "none declared"
                raise UserError(
                    f"{where}: ${{{name}}} is not a declared variable; declare it under "
                    f"'variables:' (declared: {known})"
                )
            if values[name] is None:
                unset.append((where, name))
                return match.group(0)
            return values[name]

        return VARIABLE.sub(replace, node)
    if isinstance(node, list):
        return [_substitute(v, values, f"{where}[{i}]", unset) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {
            k: _substitute(v, values, f"{where}.{k}" if where else str(k), unset)
            for k, v in node.items()
        }
    return node
