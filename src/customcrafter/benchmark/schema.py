"""What a benchmark spec file may say: its sections as pydantic models, unknown keys refused
with the nearest known one, and one line per problem naming the key."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    create_model,
    field_validator,
)

from ..config import SAMPLER_FIELDS, SampleConfig
from ..errors import UserError
from ..sampling.dwvs import BandSchedule, DynamicWeightSchedule
from .overrides import suggest
from .scoring import METRIC_KEYS

DEFAULT_TOKEN = "<new1>"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_or_many(value):
    """A single item where a list belongs is a list of one."""
    return [value] if value is not None and not isinstance(value, list) else value


OneOrMany = BeforeValidator(_one_or_many)


def settings_section(cls: type, only: tuple[str, ...] | None = None, **extra) -> type[BaseModel]:
    """A spec section made from the settings dataclass ``cls`` (its fields named in ``only``,
    by default all): their types, their defaults (a field without one is required) and their
    declared bounds; ``extra``: more fields, as pydantic's ``create_model`` takes them."""
    hints = typing.get_type_hints(cls)
    section = {}
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        bounds = {"ge": f.metadata.get("minimum"), "le": f.metadata.get("maximum")}
        default = ... if f.default is dataclasses.MISSING else f.default
        section[f.name] = (hints[f.name], Field(default, description=f.metadata["help"], **bounds))
    return create_model(f"{cls.__name__}Settings", __base__=_Section, **section, **extra)


#: ``generation:``, the sampler settings of SampleConfig plus the saved videos' frame rate
Generation = settings_section(
    SampleConfig, SAMPLER_FIELDS, save_fps=(int | None, Field(None, ge=1))
)


class Motion(_Section):
    flow: typing.Literal["farneback", "raft"] = "farneback"
    base_threshold: float = 6.0
    fps: float | None = None


class Metrics(_Section):
    clip: str | None = None
    dino: str | None = None
    motion: Motion | None = None
    shapes: StrictBool = False

    @field_validator("clip", "dino", mode="before")
    @classmethod
    def _off(cls, value):
        if value is False or value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a model (hub id or folder) or false, got {value!r}")
        return value

    @field_validator("motion", mode="before")
    @classmethod
    def _motion(cls, value):
        if value is True:
            return {}
        if value is False or value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"metrics.motion must be true, false or a mapping, got {value!r}")
        return value


class Subject(_Section):
    name: str = Field(min_length=1)
    images: str = Field(min_length=1)
    class_word: str = Field(min_length=1)
    token: str = DEFAULT_TOKEN
    prompts: typing.Annotated[list[str], OneOrMany] = Field(min_length=1)


class Method(_Section):
    name: str = Field(min_length=1)
    description: str = ""
    base: str | None = None
    train: dict[str, Any] | None = None
    module: str | None = None
    subject: str | None = None
    schedule: Any = None


class Published(_Section):
    source: str = Field(min_length=1)
    note: str = ""
    rows: dict[str, dict[str, float]]

    @field_validator("rows")
    @classmethod
    def _known_metrics(cls, rows):
        for method, values in rows.items():
            for key in values:
                if key not in METRIC_KEYS:
                    raise ValueError(
                        f"rows[{method!r}]: unknown metric {key!r}{suggest(key, METRIC_KEYS)}; "
                        f"known: {', '.join(METRIC_KEYS)}"
                    )
        return rows


class SpecFile(_Section):
    """What a spec file may say."""

    name: str | None = None
    description: str | None = None
    output_dir: str | None = None
    data_root: str | None = None
    base: str | None = None
    base_config: str | None = None
    vae_chunk_size: int | None = None
    seeds: typing.Annotated[list[int], OneOrMany] = Field(default=[0], min_length=1)
    generation: Generation = Field(default_factory=Generation)
    gif: StrictBool = False
    metrics: Metrics = Field(default_factory=Metrics)
    subjects: list[Subject] = Field(min_length=1)
    methods: list[Method] = Field(min_length=1)
    published: typing.Annotated[list[Published], OneOrMany] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds has duplicates: {seeds}")
        return seeds


TOP_KEYS = (*SpecFile.model_fields, "variables")


#: ``schedule: {dwvs: {...}}``; left out, a setting is the paper's
DwvsSettings = settings_section(DynamicWeightSchedule)
#: ``schedule: {band: {start, stop, weight}}``: the whole module in steps ``[start, stop)``
#: only (a probe of where it acts, not in the paper)
BandSettings = settings_section(BandSchedule)


def read_spec_file(path: Path) -> dict:
    """The raw mapping of a YAML or TOML spec."""
    if not path.is_file():
        raise UserError("the file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("it is not UTF-8 text; save it as UTF-8") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"could not parse it: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError("it must hold a mapping (name, subjects, methods, ...)")
    return data


def explain(error: ValidationError) -> str:
    """One line per problem, naming the key: unknown keys with the nearest known one."""
    lines = []
    for problem in error.errors():
        loc = problem["loc"]
        where = _where(loc[:-1]) or "spec"
        if problem["type"] == "extra_forbidden":
            section = _section_at(loc[:-1])
            known = list(TOP_KEYS if section is SpecFile else section.model_fields)
            lines.append(
                f"{where}: unknown key {loc[-1]!r}{suggest(loc[-1], known)}; "
                f"known keys: {', '.join(known)}"
            )
        elif problem["type"] == "missing":
            lines.append(f"{where}: missing {loc[-1]!r}")
        elif problem["type"] == "value_error":
            lines.append(f"{_where(loc) or 'spec'}: {problem['ctx']['error']}")
        else:
            lines.append(f"{_where(loc) or 'spec'}: {problem['msg']}, got {problem['input']!r}")
    return "\n".join(lines)


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _section_at(loc: tuple) -> type[BaseModel]:
    """The section model a validation error's location points into."""
    section: type[BaseModel] = SpecFile
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = section.model_fields[part].annotation
        section = next(
            (t for t in _types_in(annotation) if isinstance(t, type) and issubclass(t, BaseModel)),
            section,
        )
    return section


def _types_in(annotation) -> list:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _types_in(a)]
