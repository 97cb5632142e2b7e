"""Benchmark specs: which subjects, prompts, seeds and methods to compare, and the runner that
trains the subject modules, generates every video, scores it and writes the reports.

A spec is a YAML (or TOML) file::

    name: my-benchmark
    output_dir: results/my-benchmark      # relative to the spec file's folder
    data_root: data                       # subject image folders are relative to it
    base: videocrafter2:${vc2_checkpoint} # default base model of every method
    variables:
      vc2_checkpoint: null                # --set vc2_checkpoint=PATH or $CUSTOMCRAFTER_VC2_CHECKPOINT
    seeds: [0, 1]
    generation: {num_inference_steps: 50, guidance_scale: 12.0}
    gif: false                            # also write a .gif beside each .mp4
    metrics:
      clip: openai/clip-vit-base-patch32  # hub id or a save_pretrained folder; false: off
      dino: facebook/dino-vits16
      motion: true                        # or {flow: farneback, base_threshold: 6.0, fps: null}
      shapes: false                       # the shapes-world detectors
    subjects:
      - name: dog
        images: dreambooth/dog
        class_word: dog
        token: <new1>                     # the default
        prompts: ["a <new1> dog running on the beach"]
    methods:
      - name: CustomCrafter
        train: {lora_targets: spatial-qkv}      # TrainConfig overrides; or recipe: shapes
        schedule: {dwvs: {lambda_s: 0.4, lambda_l: 0.8, k: 5}}
      - name: module, no DWVS
        module: CustomCrafter                    # reuse that method's modules
        schedule: {constant: 1.0}
      - name: base model
        subject: none                            # prompts with the token dropped
        schedule: off
    published:
      - source: "Some paper, Table 1"
        rows: {Other method: {clip_t: 0.3, clip_i: 0.7}}

Layout of the output folder (every file written atomically, so an interrupted run can be
started again and continues where it stopped)::

    subjects/<method>/<subject>/subject.safetensors   trained modules (checkpoints resume)
    videos/<method>/settings.json                     what the videos were made with
    videos/<method>/<subject>/<prompt-index>-seed<seed>.mp4
    cache/metrics.jsonl                               one JSON line per scored video
    per_video.csv, summary.csv, summary.md, charts/<metric>.png, index.html
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig, config_to_dict, merge_config
from ..errors import UserError
from ..io.files import atomic_path, write_json
from ..subject.tokens import TOKEN_PATTERN, find_tokens, strip_tokens
from . import report
from .report import METRIC_KEYS

TOP_KEYS = (
    "name",
    "description",
    "output_dir",
    "data_root",
    "variables",
    "base",
    "base_config",
    "vae_chunk_size",
    "seeds",
    "generation",
    "gif",
    "metrics",
    "subjects",
    "methods",
    "published",
)
GENERATION_KEYS = {
    "num_inference_steps": int,
    "guidance_scale": float,
    "eta": float,
    "num_frames": int,
    "height": int,
    "width": int,
    "fps": int,
    "negative_prompt": str,
    "save_fps": int,
}
SUBJECT_KEYS = ("name", "images", "class_word", "token", "prompts")
METHOD_KEYS = ("name", "description", "base", "train", "module", "subject", "schedule")
METRICS_KEYS = ("clip", "dino", "motion", "shapes")
MOTION_KEYS = ("flow", "base_threshold", "fps")
PUBLISHED_KEYS = ("source", "note", "rows")
#: TrainConfig fields the runner sets itself
RUNNER_TRAIN_FIELDS = (
    "output_dir",
    "instance_data_dir",
    "base",
    "resume_from_checkpoint",
    "overwrite",
)
#: TrainConfig fields that name places rather than settings: not compared between runs
PLACE_TRAIN_FIELDS = (*RUNNER_TRAIN_FIELDS, "base_config", "class_data_dir", "vae_chunk_size")
RECIPES = ("shapes",)
DEFAULT_TOKEN = "<new1>"
DEFAULT_INSTANCE_PROMPT = "video of a {token} {class_word}"
DEFAULT_CLASS_PROMPT = "video of a {class_word}"
ENV_PREFIX = "CUSTOMCRAFTER_"
PACKAGE_PREFIX = "package:"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CACHE_FILE = "cache/metrics.jsonl"
SUBJECTS_DIR = "subjects"
VIDEOS_DIR = "videos"


# --- the spec ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleSpec:
    """``dwvs`` (lambda_s, lambda_l, k), ``constant`` (w) or ``off``."""

    kind: str
    lambda_s: float = 0.0
    lambda_l: float = 0.0
    k: int = 0

    def build(self):
        from ..sampling import DynamicWeightSchedule

        if self.kind == "off":
            return DynamicWeightSchedule.off()
        if self.kind == "constant":
            return DynamicWeightSchedule.constant(self.lambda_l)
        return DynamicWeightSchedule(self.lambda_s, self.lambda_l, self.k)

    def describe(self) -> str:
        if self.kind == "off":
            return "off"
        if self.kind == "constant":
            return f"constant {self.lambda_l:g}"
        return f"DWVS {self.lambda_s:g}/{self.lambda_l:g}, k={self.k}"

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "lambda_s": self.lambda_s,
            "lambda_l": self.lambda_l,
            "k": self.k,
        }


@dataclass
class SubjectSpec:
    name: str
    slug: str
    images: Path
    class_word: str
    token: str
    prompts: list[str]


@dataclass
class MethodSpec:
    """``module``: ``"train"`` (trains its own modules), ``"reuse"`` (``owner``'s),
    ``"none"`` (the base model alone) or ``"path"`` (``path`` with ``{subject}``)."""

    name: str
    slug: str
    base: str
    schedule: ScheduleSpec
    module: str
    owner: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    description: str = ""
    base_as_written: str = ""

    @property
    def uses_module(self) -> bool:
        return self.module != "none"


@dataclass(frozen=True)
class MotionSpec:
    flow: str = "farneback"
    base_threshold: float = 6.0
    fps: float | None = None

    def as_dict(self) -> dict:
        return {"flow": self.flow, "base_threshold": self.base_threshold, "fps": self.fps}


@dataclass
class MetricsSpec:
    clip: str | None = None
    dino: str | None = None
    motion: MotionSpec | None = None
    shapes: bool = False


@dataclass
class PublishedGroup:
    source: str
    rows: dict[str, dict[str, float]]
    note: str = ""


@dataclass(frozen=True)
class VideoJob:
    method: str
    subject: str
    prompt_index: int
    prompt: str
    sampled_prompt: str
    seed: int
    path: str  # relative to the output folder, posix

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.method, self.subject, self.prompt_index, self.seed)

    def fields(self) -> dict[str, Any]:
        """What identifies the video, as recorded in the score cache and the reports."""
        return asdict(self)


@dataclass
class BenchmarkSpec:
    name: str
    spec_path: Path | None
    output_dir: Path
    data_root: Path | None
    seeds: list[int]
    generation: dict[str, Any]
    gif: bool
    metrics: MetricsSpec
    subjects: list[SubjectSpec]
    methods: list[MethodSpec]
    published: list[PublishedGroup] = field(default_factory=list)
    base_config: str | None = None
    vae_chunk_size: int | None = None
    description: str = ""
    #: variable name -> value (None where unset); unset ones may remain in ``base`` strings
    variables: dict[str, str | None] = field(default_factory=dict)

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)

    def subject(self, name: str) -> SubjectSpec:
        return next(s for s in self.subjects if s.name == name)

    def jobs(self) -> list[VideoJob]:
        """Every video of the benchmark, method by method."""
        out = []
        for method in self.methods:
            for subject in self.subjects:
                for index, prompt in enumerate(subject.prompts):
                    sampled = prompt if method.uses_module else strip_tokens(prompt)
                    for seed in self.seeds:
                        path = f"{VIDEOS_DIR}/{method.slug}/{subject.slug}/{index}-seed{seed}.mp4"
                        out.append(
                            VideoJob(method.name, subject.name, index, prompt, sampled, seed, path)
                        )
        return out

    def module_dir(self, owner: MethodSpec, subject: SubjectSpec) -> Path:
        return self.output_dir / SUBJECTS_DIR / owner.slug / subject.slug

    def module_path(self, method: MethodSpec, subject: SubjectSpec) -> Path | None:
        """Where ``method``'s subject module for ``subject`` is (or will be)."""
        from ..subject import SUBJECT_FILENAME

        if method.module == "none":
            return None
        if method.module == "path":
            return _module_file(method.path, subject, self)
        owner = self.method(method.owner) if method.module == "reuse" else method
        return self.module_dir(owner, subject) / SUBJECT_FILENAME

    def unset_variables(self, text: str | None) -> list[str]:
        return [] if not text else [v for v in VARIABLE.findall(text)]


def _module_file(template: str, subject: SubjectSpec, spec: BenchmarkSpec) -> Path:
    from ..subject import SUBJECT_FILENAME

    path = Path(template.replace("{subject}", subject.name)).expanduser()
    if not path.is_absolute() and spec.spec_path is not None:
        path = spec.spec_path.parent / path
    return path / SUBJECT_FILENAME if path.is_dir() or not path.suffix else path


# --- loading and validation ----------------------------------------------------------------
def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(data: Mapping, known: Iterable[str], where: str) -> None:
    known = list(known)
    for key in data:
        if key not in known:
            raise UserError(
                f"{where}: unknown key {key!r}{_suggest(key, known)}; known keys: {', '.join(known)}"
            )


def _mapping(value, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise UserError(f"{where} must be a mapping of keys to values, got {value!r}")
    return dict(value)


def _string(value, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise UserError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _number(value, kind: type, where: str):
    if isinstance(value, bool):
        raise UserError(f"{where} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"{where} must be a number, got {value!r}") from None
    if not isinstance(value, int | float):
        raise UserError(f"{where} must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise UserError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def slugify(name: str) -> str:
    """A folder name for ``name``: lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def _read_spec_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"benchmark spec {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"could not parse benchmark spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"benchmark spec {path} must hold a mapping (name, subjects, methods, ...)")
    return data


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def _apply_path_override(data: dict, key: str, raw: str) -> None:
    """``generation.num_inference_steps=25``, ``methods.NAME.train.max_train_steps=100``,
    ``seeds=[0,1]``: the value is read as YAML."""
    parts = key.split(".")
    if parts[0] not in TOP_KEYS:
        raise UserError(
            f"--set {key}: {parts[0]!r} is neither a variable of the spec nor a spec key"
            f"{_suggest(parts[0], TOP_KEYS)}; spec keys: {', '.join(TOP_KEYS)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = _list_item(node, part, key)
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise UserError(f"--set {key}: {where} is not a mapping or a list")
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, key)
        node[index] = value
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


def _list_item(items: list, part: str, key: str):
    return items[_list_index(items, part, key)]


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


def _unset_message(name: str) -> str:
    return (
        f"the variable {name} is not set: pass --set {name}=VALUE "
        f"or set the environment variable {ENV_PREFIX}{name.upper()}"
    )


def _resolve_place(value: str, base_dir: Path) -> Path:
    """``package:shapes/subjects`` -> inside the installed customcrafter package; relative
    paths -> under ``base_dir``."""
    if value.startswith(PACKAGE_PREFIX):
        import customcrafter

        return Path(customcrafter.__file__).resolve().parent / value[len(PACKAGE_PREFIX) :]
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def load_spec(
    path: str | Path,
    data_root: str | Path | None = None,
    overrides: Mapping[str, str] | Iterable[str] | None = None,
    output_dir: str | Path | None = None,
    check_images: bool = True,
) -> BenchmarkSpec:
    """Read and validate a benchmark spec.

    ``data_root`` replaces the spec's ``data_root`` (relative to the current folder).
    ``overrides``: ``{"vc2_checkpoint": "/ckpt/model.ckpt"}`` or ``["key=value", ...]``; a
    key names a declared variable or a dotted path into the spec (``generation.height``,
    ``methods.NAME.train.max_train_steps``), whose value is read as YAML.
    ``output_dir`` replaces the spec's ``output_dir`` (relative to the current folder).
    """
    path = Path(path).expanduser().resolve()
    data = _read_spec_file(path)
    if isinstance(overrides, Mapping):
        pairs = [(str(k), str(v)) for k, v in overrides.items()]
    else:
        pairs = [_parse_override(item) for item in (overrides or [])]
    declared = _mapping(data.get("variables") or {}, "variables")
    variable_overrides = {}
    for key, value in pairs:
        if key in declared:
            variable_overrides[key] = value
        else:
            _apply_path_override(data, key, value)
    values = _resolve_variables(declared, variable_overrides)
    unset: list[tuple[str, str]] = []
    raw = {k: v for k, v in data.items() if k != "variables"}
    data = _substitute(raw, values, "", unset)
    for where, name in unset:
        if not re.fullmatch(r"(base|base_config|methods\[\d+\]\.base)", where):
            raise UserError(f"{where}: {_unset_message(name)}")
    spec = _build_spec(data, path, data_root, output_dir, values, check_images)
    # what each method's videos are recorded as made with: the base as the spec writes it
    # (with ${...}), so that moving a checkpoint does not invalidate finished videos
    raw_methods = raw.get("methods") if isinstance(raw.get("methods"), list) else []
    raw_by_name = {m.get("name"): m for m in raw_methods if isinstance(m, dict)}
    for method in spec.methods:
        source = method.owner if method.module == "reuse" else method.name
        written = raw_by_name.get(source, {}).get("base", raw.get("base"))
        method.base_as_written = str(written) if written is not None else method.base
    return spec


def _build_spec(
    data: dict,
    spec_path: Path,
    data_root: str | Path | None,
    output_dir: str | Path | None,
    variables: dict,
    check_images: bool,
) -> BenchmarkSpec:
    _check_keys(data, TOP_KEYS, "spec")
    here = spec_path.parent
    name = _string(data.get("name", spec_path.stem), "name")

    if output_dir is not None:
        out = Path(output_dir).expanduser().resolve()
    else:
        if "output_dir" not in data:
            raise UserError("spec: give output_dir (relative paths are under the spec's folder)")
        out = _resolve_place(_string(data["output_dir"], "output_dir"), here).resolve()

    if data_root is not None:
        root: Path | None = _resolve_place(str(data_root), Path.cwd())
    elif data.get("data_root") is not None:
        root = _resolve_place(_string(data["data_root"], "data_root"), here)
    else:
        root = None
    if root is not None and check_images and not root.is_dir():
        raise UserError(
            f"the data root {root} does not exist; pass --data-root DIR (the folder that holds "
            "the subjects' image folders)"
        )

    seeds_raw = data.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds_raw = [seeds_raw]
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise UserError(f"seeds must be a non-empty list of integers, got {seeds_raw!r}")
    seeds = [_number(s, int, f"seeds[{i}]") for i, s in enumerate(seeds_raw)]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds has duplicates: {seeds}")

    generation = {}
    raw_generation = _mapping(data.get("generation") or {}, "generation")
    _check_keys(raw_generation, GENERATION_KEYS, "generation")
    for key, value in raw_generation.items():
        if value is None:
            continue
        kind = GENERATION_KEYS[key]
        where = f"generation.{key}"
        generation[key] = (
            _string(value, where, True) if kind is str else _number(value, kind, where)
        )
    for key in ("num_inference_steps", "num_frames", "height", "width", "fps", "save_fps"):
        if key in generation and generation[key] < 1:
            raise UserError(f"generation.{key} must be at least 1, got {generation[key]}")

    gif = data.get("gif", False)
    if not isinstance(gif, bool):
        raise UserError(f"gif must be true or false, got {gif!r}")

    base_default = data.get("base")
    if base_default is not None:
        base_default = _string(base_default, "base")
    base_config = data.get("base_config")
    if base_config is not None:
        base_config = str(_resolve_place(_string(base_config, "base_config"), here))
    vae_chunk = data.get("vae_chunk_size")
    if vae_chunk is not None:
        vae_chunk = _number(vae_chunk, int, "vae_chunk_size")

    metrics = _build_metrics(data.get("metrics"), here)
    subjects = _build_subjects(data.get("subjects"), root, check_images)
    methods = _build_methods(data.get("methods"), base_default, subjects, here)
    spec = BenchmarkSpec(
        name=name,
        spec_path=spec_path,
        output_dir=out,
        data_root=root,
        seeds=seeds,
        generation=generation,
        gif=gif,
        metrics=metrics,
        subjects=subjects,
        methods=methods,
        published=_build_published(data.get("published")),
        base_config=base_config,
        vae_chunk_size=vae_chunk,
        description=str(data.get("description") or ""),
        variables=variables,
    )
    for method in methods:
        if method.module == "train":
            for subject in subjects:
                train_config(spec, method, subject)  # raises on bad settings
        if method.module == "path" and check_images:
            for subject in subjects:
                module = spec.module_path(method, subject)
                if not module.is_file():
                    raise UserError(
                        f"method {method.name!r}: no subject module for {subject.name!r} at "
                        f"{module}"
                    )
    return spec


def _build_metrics(raw, here: Path) -> MetricsSpec:
    raw = _mapping(raw or {}, "metrics")
    _check_keys(raw, METRICS_KEYS, "metrics")

    def model(key: str) -> str | None:
        value = raw.get(key)
        if value in (None, False):
            return None
        value = _string(value, f"metrics.{key}")
        local = _resolve_place(value, here)
        if local.is_dir():
            return str(local)
        if value.startswith((".", "/", "~", PACKAGE_PREFIX)) or value.count("/") > 1:
            raise UserError(
                f"metrics.{key}: the model folder {local} does not exist; give a folder written "
                "by save_pretrained or a hub id such as "
                + ("openai/clip-vit-base-patch32" if key == "clip" else "facebook/dino-vits16")
            )
        return value  # a hub id: loaded (or reported missing) when the first video is scored

    motion_raw = raw.get("motion", False)
    motion = None
    if motion_raw is True:
        motion = MotionSpec()
    elif isinstance(motion_raw, Mapping):
        _check_keys(motion_raw, MOTION_KEYS, "metrics.motion")
        flow = motion_raw.get("flow", "farneback")
        if flow not in ("farneback", "raft"):
            raise UserError(f"metrics.motion.flow must be farneback or raft, got {flow!r}")
        threshold = _number(
            motion_raw.get("base_threshold", 6.0), float, "metrics.motion.base_threshold"
        )
        fps = motion_raw.get("fps")
        fps = None if fps is None else _number(fps, float, "metrics.motion.fps")
        motion = MotionSpec(flow, threshold, fps)
    elif motion_raw not in (False, None):
        raise UserError(f"metrics.motion must be true, false or a mapping, got {motion_raw!r}")
    shapes = raw.get("shapes", False)
    if not isinstance(shapes, bool):
        raise UserError(f"metrics.shapes must be true or false, got {shapes!r}")
    return MetricsSpec(model("clip"), model("dino"), motion, shapes)


def _build_subjects(raw, root: Path | None, check_images: bool) -> list[SubjectSpec]:
    from ..training.data import list_images

    if not isinstance(raw, list) or not raw:
        raise UserError("subjects must be a non-empty list (name, images, class_word, prompts)")
    subjects, slugs = [], {}
    for i, item in enumerate(raw):
        where = f"subjects[{i}]"
        item = _mapping(item, where)
        _check_keys(item, SUBJECT_KEYS, where)
        for key in ("name", "images", "class_word", "prompts"):
            if key not in item:
                raise UserError(f"{where}: missing {key!r}")
        name = _string(item["name"], f"{where}.name")
        where = f"subject {name!r}"
        if any(s.name == name for s in subjects):
            raise UserError(f"subjects: the name {name!r} appears twice")
        slug = slugify(name)
        if slug in slugs:
            raise UserError(
                f"subjects {slugs[slug]!r} and {name!r} would share the folder name {slug!r}"
            )
        slugs[slug] = name
        images_value = _string(item["images"], f"{where}.images")
        if root is None and not (
            images_value.startswith(PACKAGE_PREFIX) or Path(images_value).expanduser().is_absolute()
        ):
            raise UserError(
                f"{where}: images {images_value!r} is a relative folder but the spec has no "
                "data_root; add data_root to the spec or pass --data-root DIR"
            )
        images = _resolve_place(images_value, root or Path.cwd())
        if check_images:
            if not images.is_dir():
                hint = f" under the data root {root}" if root is not None else ""
                raise UserError(
                    f"{where}: the image folder {images} does not exist{hint}; pass --data-root "
                    "DIR pointing at the folder that holds the subjects' image folders"
                )
            try:
                list_images(images, f"{where}: image")
            except UserError as exc:
                raise UserError(str(exc)) from None
        class_word = _string(item["class_word"], f"{where}.class_word").strip()
        token = _string(item.get("token", DEFAULT_TOKEN), f"{where}.token").strip()
        if not TOKEN_PATTERN.fullmatch(token):
            raise UserError(f"{where}: token {token!r} must look like <new1> (angle brackets)")
        prompts = item["prompts"]
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts:
            raise UserError(f"{where}: prompts must be a non-empty list of strings")
        for j, prompt in enumerate(prompts):
            prompt = _string(prompt, f"{where}.prompts[{j}]")
            tokens = find_tokens(prompt)
            if token not in tokens:
                raise UserError(
                    f"{where}: prompt {j} {prompt!r} does not use the subject token {token}; "
                    f"write it before the class word, e.g. 'a {token} {class_word} running'"
                )
            if tokens != [token]:
                others = ", ".join(t for t in tokens if t != token)
                raise UserError(f"{where}: prompt {j} {prompt!r} uses other tokens ({others})")
            if not re.search(
                rf"(^|\s){re.escape(class_word)}(\s|$|[.,;:!?])", strip_tokens(prompt)
            ):
                raise UserError(
                    f"{where}: prompt {j} {prompt!r} does not name the class word "
                    f"{class_word!r}; the base-model baseline and CLIP-T read the prompt without "
                    f"the token, so write '{token} {class_word}'"
                )
        if len(set(prompts)) != len(prompts):
            raise UserError(f"{where}: a prompt appears twice")
        subjects.append(SubjectSpec(name, slug, images, class_word, token, list(prompts)))
    return subjects


def _build_schedule(raw, where: str, default: ScheduleSpec) -> ScheduleSpec:
    if raw is None:
        return default
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("off", "none")):
        return ScheduleSpec("off")
    if isinstance(raw, str) and raw.strip().lower() == "dwvs":
        return ScheduleSpec("dwvs", 0.4, 0.8, 5)
    if isinstance(raw, Mapping) and len(raw) == 1:
        kind, value = next(iter(raw.items()))
        if kind == "constant":
            weight = _number(value, float, f"{where}.constant")
            return ScheduleSpec("constant", weight, weight, 0)
        if kind == "dwvs":
            value = _mapping(value or {}, f"{where}.dwvs")
            _check_keys(value, ("lambda_s", "lambda_l", "k"), f"{where}.dwvs")
            k = _number(value.get("k", 5), int, f"{where}.dwvs.k")
            if k < 0:
                raise UserError(f"{where}.dwvs.k must be >= 0, got {k}")
            return ScheduleSpec(
                "dwvs",
                _number(value.get("lambda_s", 0.4), float, f"{where}.dwvs.lambda_s"),
                _number(value.get("lambda_l", 0.8), float, f"{where}.dwvs.lambda_l"),
                k,
            )
    raise UserError(
        f"{where} must be one of {{dwvs: {{lambda_s, lambda_l, k}}}}, {{constant: W}} or off, "
        f"got {raw!r}"
    )


def _build_methods(raw, base_default, subjects, here: Path) -> list[MethodSpec]:
    if not isinstance(raw, list) or not raw:
        raise UserError(
            "methods must be a non-empty list (name, base, train/module/subject, schedule)"
        )
    items, slugs = [], {}
    for i, item in enumerate(raw):
        item = _mapping(item, f"methods[{i}]")
        _check_keys(item, METHOD_KEYS, f"methods[{i}]")
        if "name" not in item:
            raise UserError(f"methods[{i}]: missing 'name'")
        name = _string(item["name"], f"methods[{i}].name")
        if any(other["name"] == name for other in items):
            raise UserError(f"methods: the name {name!r} appears twice")
        slug = slugify(name)
        if slug in slugs:
            raise UserError(
                f"methods {slugs[slug]!r} and {name!r} would share the folder name {slug!r}; "
                "rename one"
            )
        slugs[slug] = name
        items.append(item)

    by_name = {item["name"]: item for item in items}
    methods = []
    for item in items:
        name = item["name"]
        where = f"method {name!r}"
        sources = [k for k in ("train", "module", "subject") if k in item]
        if len(sources) != 1:
            raise UserError(
                f"{where}: give exactly one of 'train' (train its subject modules), 'module' "
                "(reuse another method's), or 'subject' (none, or a folder with {subject})"
            )
        source = sources[0]
        owner, train, path = None, {}, None
        if source == "train":
            kind = "train"
            train = _mapping(item["train"] or {}, f"{where}.train")
        elif source == "module":
            kind = "reuse"
            owner = _resolve_owner(name, by_name, where)
        else:
            value = item["subject"]
            if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
                kind = "none"
            else:
                value = _string(value, f"{where}.subject")
                if "{subject}" not in value:
                    raise UserError(
                        f"{where}: subject must be none or a path containing {{subject}}, "
                        f"got {value!r}"
                    )
                kind, path = "path", value
        default = ScheduleSpec("off") if kind == "none" else ScheduleSpec("dwvs", 0.4, 0.8, 5)
        schedule = _build_schedule(item.get("schedule"), f"{where}.schedule", default)
        if kind == "none" and schedule.kind != "off":
            raise UserError(f"{where}: a method without a subject module needs schedule: off")
        base = item.get("base")
        if kind == "reuse":
            owner_base = by_name[owner].get("base", base_default)
            if base is not None and base != owner_base:
                raise UserError(
                    f"{where}: it reuses {owner!r}'s modules, which are trained on "
                    f"{owner_base!r}; drop its base (or use the same one)"
                )
            base = owner_base
        base = base if base is not None else base_default
        if base is None:
            raise UserError(f"{where}: no base model; set base on the method or at the top level")
        base = _string(base, f"{where}.base")
        description = str(item.get("description") or "")
        methods.append(
            MethodSpec(name, slugify(name), base, schedule, kind, owner, train, path, description)
        )
    return methods


def _resolve_owner(name: str, by_name: dict, where: str) -> str:
    """Follow ``module:`` links to the method that trains the modules."""
    seen = [name]
    current = by_name[name]
    while "module" in current:
        target = current["module"]
        if not isinstance(target, str) or target not in by_name:
            raise UserError(
                f"{where}: module {target!r} is not the name of a method{_suggest(target, by_name)}"
            )
        if target in seen:
            raise UserError(
                f"{where}: module links go round in a circle: {' -> '.join([*seen, target])}"
            )
        seen.append(target)
        current = by_name[target]
    if "train" not in current:
        raise UserError(
            f"{where}: module {seen[-1]!r} has no subject modules of its own to share "
            "(it must have 'train:')"
        )
    return seen[-1]


def _build_published(raw) -> list[PublishedGroup]:
    if raw is None:
        return []
    groups = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(groups, list):
        raise UserError("published must be a list of {source, rows} groups")
    out = []
    for i, group in enumerate(groups):
        where = f"published[{i}]"
        group = _mapping(group, where)
        _check_keys(group, PUBLISHED_KEYS, where)
        source = _string(group.get("source"), f"{where}.source")
        rows_raw = _mapping(group.get("rows"), f"{where}.rows")
        rows = {}
        for method, values in rows_raw.items():
            values = _mapping(values, f"{where}.rows[{method!r}]")
            for key in values:
                if key not in METRIC_KEYS:
                    raise UserError(
                        f"{where}.rows[{method!r}]: unknown metric {key!r}"
                        f"{_suggest(key, METRIC_KEYS)}; known: {', '.join(METRIC_KEYS)}"
                    )
            rows[str(method)] = {
                k: _number(v, float, f"{where}.rows[{method!r}].{k}") for k, v in values.items()
            }
        out.append(PublishedGroup(source, rows, str(group.get("note") or "")))
    return out


def _coerce_train_value(name: str, value):
    kinds = {f.name: str(f.type) for f in TrainConfig.__dataclass_fields__.values()}
    kind = kinds.get(name, "")
    if isinstance(value, str) and kind.startswith(("float", "int")):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if kind.startswith("int") else number
    return value


def train_config(spec: BenchmarkSpec, method: MethodSpec, subject: SubjectSpec) -> TrainConfig:
    """The TrainConfig that trains ``method``'s module for ``subject``."""
    from ..shapes.customize import subject_train_config
    from ..shapes.world import SUBJECTS

    where = f"method {method.name!r}: train"
    overrides = dict(method.train)
    recipe = overrides.pop("recipe", None)
    for key in overrides:
        if key in RUNNER_TRAIN_FIELDS:
            raise UserError(
                f"{where}.{key} is set by the benchmark runner (base comes from the method's "
                "base, the data from the subject, the folder from output_dir)"
            )
    fill = {"token": subject.token, "class_word": subject.class_word}
    for key in ("instance_prompt", "class_prompt"):
        if isinstance(overrides.get(key), str):
            try:
                overrides[key] = overrides[key].format(**fill)
            except (KeyError, IndexError, ValueError) as exc:
                raise UserError(
                    f"{where}.{key}: only {{token}} and {{class_word}} may appear in braces"
                ) from exc
    overrides = {k: _coerce_train_value(k, v) for k, v in overrides.items()}
    out = spec.module_dir(method, subject)
    if recipe is None:
        values: dict[str, Any] = {
            "instance_prompt": DEFAULT_INSTANCE_PROMPT.format(**fill),
            "class_prompt": DEFAULT_CLASS_PROMPT.format(**fill),
        }
    elif recipe == "shapes":
        steps = overrides.get("max_train_steps", 300)
        if not isinstance(steps, int) or steps < 1:
            raise UserError(f"{where}.max_train_steps must be a positive integer, got {steps!r}")
        recipe_subject = subject.name if subject.name in SUBJECTS else next(iter(SUBJECTS))
        values = config_to_dict(
            subject_train_config(
                recipe_subject, out, steps, overrides.get("lora_targets", "spatial-qkv")
            )
        )
        values["instance_prompt"] = f"a {subject.token} {subject.class_word}"
        values["class_prompt"] = f"a {subject.class_word}"
    else:
        raise UserError(f"{where}.recipe: unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    values.update(
        base=method.base,
        base_config=spec.base_config,
        vae_chunk_size=spec.vae_chunk_size,
        instance_data_dir=str(subject.images),
        output_dir=str(out),
    )
    try:
        config = merge_config(TrainConfig, values, overrides)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None
    try:
        config.validate()
    except (UserError, TypeError) as exc:
        raise UserError(f"{where}: {exc}") from None
    if subject.token not in find_tokens(config.instance_prompt):
        raise UserError(
            f"{where}.instance_prompt {config.instance_prompt!r} must use the subject's token "
            f"{subject.token}"
        )
    return config


# --- running -------------------------------------------------------------------------------
@dataclass
class RunStats:
    trained: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    gifs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _json_roundtrip(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:20]


def _method_settings(spec: BenchmarkSpec, method: MethodSpec) -> dict:
    """What a method's videos depend on (paths left out, so moving data does not matter)."""
    if method.module == "train":
        module: Any = {"train": method.train}
    elif method.module == "reuse":
        module = {"reuse": method.owner, "train": spec.method(method.owner).train}
    elif method.module == "path":
        module = {"path": method.path}
    else:
        module = "none"
    return _json_roundtrip(
        {
            "base": method.base_as_written or method.base,
            "module": module,
            "schedule": method.schedule.as_dict(),
            "generation": spec.generation,
        }
    )


def _check_method_settings(spec: BenchmarkSpec, method: MethodSpec) -> None:
    folder = spec.output_dir / VIDEOS_DIR / method.slug
    path = folder / "settings.json"
    wanted = _method_settings(spec, method)
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            stored = None
        stored = stored if isinstance(stored, dict) else None
        if stored is not None and stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted.get(k))
            raise UserError(
                f"method {method.name!r}: its videos in {folder} were made with other settings "
                f"(changed: {', '.join(changed)}). Delete {folder} to regenerate them, or give "
                "another --output-dir"
            )
        if stored == wanted:
            return
    write_json(path, wanted)


class MetricsCache:
    """``cache/metrics.jsonl``: one JSON object per scored video, the newest line wins. A line
    cut short by a crash is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        self.lines = 0
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "path" in record:
                    self.records[record["path"]] = record
                    self.lines += 1

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["path"]] = record
        self.lines += 1

    def compact(self) -> None:
        if self.lines <= len(self.records):
            return
        with atomic_path(self.path) as tmp:
            tmp.write_text(
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values()),
                encoding="utf-8",
            )
        self.lines = len(self.records)


def _references_fingerprint(folder: Path) -> str:
    from ..training.data import list_images

    digest = hashlib.sha256()
    for path in list_images(folder, "subject image"):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def _metric_settings(spec: BenchmarkSpec, refs: str) -> dict[str, dict]:
    """Per metric group, what its values depend on besides the video."""
    metrics, groups = spec.metrics, {}
    if metrics.clip:
        groups["clip"] = {"model": metrics.clip, "references": refs}
    if metrics.dino:
        groups["dino"] = {"model": metrics.dino, "references": refs}
    if metrics.motion:
        groups["motion"] = metrics.motion.as_dict()
    if metrics.shapes:
        groups["shapes"] = {"references": refs, "version": 1}
    return groups


class _Scorers:
    """CLIP and DINO models, loaded on first use."""

    def __init__(self, spec: BenchmarkSpec, device: str):
        self.spec, self.device = spec, device
        self._clip = self._dino = None
        self._refs: dict[str, list] = {}

    @property
    def clip(self):
        if self._clip is None:
            from .metrics import ClipScorer

            self._clip = ClipScorer.from_pretrained(self.spec.metrics.clip, device=self.device)
        return self._clip

    @property
    def dino(self):
        if self._dino is None:
            from .metrics import DinoScorer

            self._dino = DinoScorer.from_pretrained(self.spec.metrics.dino, device=self.device)
        return self._dino

    def references(self, subject: SubjectSpec) -> list:
        if subject.name not in self._refs:
            from ..training.data import list_images, load_image

            paths = list_images(subject.images, f"subject {subject.name!r} image")
            self._refs[subject.name] = [load_image(p) for p in paths]
        return self._refs[subject.name]


def _nan_to_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _named_phrase(prompt: str, options: Iterable[str], pattern: str) -> str | None:
    for option in sorted(options, key=len, reverse=True):
        if re.search(pattern.format(re.escape(option)), prompt):
            return option
    return None


def _score_group(group: str, frames: np.ndarray, job: VideoJob, subject, scorers, spec) -> dict:
    if group == "clip":
        clip = scorers.clip
        refs = scorers.references(subject)
        return {
            "clip_t": clip.clip_t(frames, job.prompt),
            "clip_i": clip.clip_i(frames, refs),
            "t_cons": clip.temporal_consistency(frames) if len(frames) > 1 else None,
        }
    if group == "dino":
        return {"dino_i": scorers.dino.dino_i(frames, scorers.references(subject))}
    if group == "motion":
        from .metrics import motion_metrics

        if len(frames) < 2:
            return {"dynamic_degree": None, "flow_magnitude": None}
        motion = spec.metrics.motion
        result = motion_metrics(
            frames,
            flow=motion.flow,
            fps=motion.fps,
            base_threshold=motion.base_threshold,
            device=scorers.device,
        )
        return {
            "dynamic_degree": float(result.dynamic),
            "flow_magnitude": _nan_to_none(result.mean_magnitude),
        }
    if group == "shapes":
        from ..shapes.detect import read_clip, subject_similarity
        from ..shapes.world import BACKGROUNDS, MOTIONS

        refs = [np.asarray(image) for image in scorers.references(subject)]
        reading = read_clip(frames)
        text = strip_tokens(job.prompt)
        motion = _named_phrase(text, MOTIONS, r"(^|\s){}($|\s|[.,;])")
        background = _named_phrase(text, BACKGROUNDS, r"(^|\s)on an? {} background")
        return {
            "subject_similarity": subject_similarity(frames, refs),
            "displacement": _nan_to_none(reading.displacement),
            "motion_accuracy": None if motion is None else float(reading.motion == motion),
            "background_accuracy": (
                None if background is None else float(reading.background == background)
            ),
            "shapes_motion_read": reading.motion,
            "shapes_background_read": reading.background,
        }
    raise ValueError(group)


def _default_device(device) -> str:
    import torch

    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_benchmark(
    spec: BenchmarkSpec,
    device: str | None = None,
    progress: bool = True,
    dtype=None,
) -> Path:
    """Train what is missing, generate what is missing, score what is unscored, and write the
    reports. Returns the output folder. Safe to interrupt and run again."""
    began = time.perf_counter()
    device = _default_device(device)
    out = spec.output_dir
    stats = RunStats()
    jobs = spec.jobs()
    missing = [job for job in jobs if not (out / job.path).is_file()]
    _check_variables(spec, missing)
    cache = MetricsCache(out / CACHE_FILE)
    _check_stale_prompts(spec, jobs, cache)
    for method in spec.methods:
        _check_method_settings(spec, method)

    _train_missing(spec, missing, stats, progress)
    _generate_missing(spec, missing, stats, device, dtype, progress)
    if spec.gif:
        _write_missing_gifs(spec, jobs, stats)
    _score(spec, jobs, cache, stats, device, progress)
    cache.compact()
    write_reports(spec, cache=cache)
    stats.seconds = round(time.perf_counter() - began, 2)
    write_json(
        out / "last_run.json",
        {
            "trained": stats.trained,
            "generated": stats.generated,
            "gifs": stats.gifs,
            "scored": stats.scored,
            "seconds": stats.seconds,
        },
    )
    return out


def _check_stale_prompts(spec: BenchmarkSpec, jobs: list[VideoJob], cache: MetricsCache) -> None:
    for job in jobs:
        record = cache.get(job.path)
        video = spec.output_dir / job.path
        if record is None or not video.is_file() or record.get("prompt") == job.prompt:
            continue
        if record.get("sha") == _file_hash(video):
            raise UserError(
                f"{video} was generated for the prompt {record.get('prompt')!r}, but prompt "
                f"{job.prompt_index} of {job.subject!r} is now {job.prompt!r}. Delete "
                f"{video.parent} to regenerate, or give another --output-dir"
            )


def _check_variables(spec: BenchmarkSpec, missing: list[VideoJob]) -> None:
    """Fail before any work when a model that must be loaded names an unset variable."""
    needed = {job.method for job in missing}
    needed |= {spec.method(name).owner for name in needed if spec.method(name).owner}
    for method in spec.methods:
        if method.name in needed:
            for text in (method.base, spec.base_config):
                for name in spec.unset_variables(text):
                    raise UserError(f"method {method.name!r}: {_unset_message(name)}")


def _owner(spec: BenchmarkSpec, method: MethodSpec) -> MethodSpec | None:
    if method.module == "train":
        return method
    if method.module == "reuse":
        return spec.method(method.owner)
    return None


def _train_missing(spec: BenchmarkSpec, missing: list[VideoJob], stats: RunStats, progress: bool):
    from ..subject import SUBJECT_FILENAME
    from ..training import train
    from ..training.checkpoint import list_checkpoints

    needed: list[tuple[MethodSpec, SubjectSpec]] = []
    for job in missing:
        owner = _owner(spec, spec.method(job.method))
        if owner is not None:
            pair = (owner, spec.subject(job.subject))
            if pair not in needed:
                needed.append(pair)
    # a finished module is checked against the settings it was trained with, whether or not
    # videos are missing
    for owner in [m for m in spec.methods if m.module == "train"]:
        for subject in spec.subjects:
            folder = spec.module_dir(owner, subject)
            if (folder / SUBJECT_FILENAME).is_file():
                _check_trained_settings(spec, owner, subject, folder)
    for owner, subject in needed:
        folder = spec.module_dir(owner, subject)
        if (folder / SUBJECT_FILENAME).is_file():
            continue
        config = train_config(spec, owner, subject)
        if folder.is_dir() and list_checkpoints(folder):
            _check_trained_settings(spec, owner, subject, folder)
            config.resume_from_checkpoint = "latest"
        if progress:
            print(f"training the subject module of {owner.name!r} for {subject.name!r}")
        train(config, progress=progress)
        stats.trained.append(f"{owner.slug}/{subject.slug}")
        _free_memory()


def _comparable(values: dict) -> dict:
    return {k: v for k, v in _json_roundtrip(values).items() if k not in PLACE_TRAIN_FIELDS}


def _check_trained_settings(spec, owner: MethodSpec, subject: SubjectSpec, folder: Path) -> None:
    stored_path = folder / "train_config.json"
    if not stored_path.is_file():
        return
    try:
        stored = _comparable(json.loads(stored_path.read_text()))
    except json.JSONDecodeError:
        return
    wanted = _comparable(config_to_dict(train_config(spec, owner, subject)))
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise UserError(
            f"method {owner.name!r}: the subject module in {folder} was trained with other "
            f"settings ({', '.join(changed)}). Delete {folder} to train it again, or give "
            "another --output-dir"
        )


def _generate_missing(spec, missing, stats, device, dtype, progress) -> None:
    import torch

    from ..io.video import write_video
    from ..sampling import CustomCrafterPipeline

    if not missing:
        return
    if dtype is None and device.startswith("cuda"):
        dtype = torch.float16  # as `customcrafter generate`; the CPU keeps the model's own
    groups: dict[tuple, list[VideoJob]] = {}
    for job in missing:
        method = spec.method(job.method)
        module = spec.module_path(method, spec.subject(job.subject))
        key = (method.base, str(module) if module else "", job.subject if module else "")
        groups.setdefault(key, []).append(job)
    generation = {k: v for k, v in spec.generation.items() if k != "save_fps"}
    bar = tqdm(total=len(missing), desc="generating", disable=not progress)
    try:
        for (base, module, _), group in groups.items():
            pipe = CustomCrafterPipeline.from_pretrained(
                base,
                module or None,
                device=device,
                dtype=dtype,
                base_config=spec.base_config,
                vae_chunk_size=spec.vae_chunk_size,
            )
            module_obj = pipe.subject
            fps = (
                spec.generation.get("save_fps") or generation.get("fps") or pipe.model.defaults.fps
            )
            for job in group:
                method = spec.method(job.method)
                bar.set_postfix_str(f"{method.slug}/{spec.subject(job.subject).slug}")
                pipe.subject = module_obj if method.uses_module else None
                result = pipe(
                    job.sampled_prompt,
                    schedule=method.schedule.build(),
                    seed=job.seed,
                    progress=False,
                    **generation,
                )
                path = spec.output_dir / job.path
                write_video(path, result.videos[0], fps)
                if spec.gif:
                    write_video(path.with_suffix(".gif"), result.videos[0], fps)
                stats.generated.append(job.path)
                bar.update(1)
            del pipe, module_obj
            _free_memory()
    finally:
        bar.close()


def _video_fps(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return max(1, round(float(rate))) if rate else 8


def _write_missing_gifs(spec: BenchmarkSpec, jobs: list[VideoJob], stats: RunStats) -> None:
    from ..io.video import read_video, write_video

    for job in jobs:
        path = spec.output_dir / job.path
        gif = path.with_suffix(".gif")
        if path.is_file() and not gif.is_file():
            write_video(gif, read_video(path), _video_fps(path))
            stats.gifs.append(gif.relative_to(spec.output_dir).as_posix())


def _score(spec, jobs, cache: MetricsCache, stats: RunStats, device: str, progress: bool) -> None:
    from ..io.video import read_video

    refs = {s.name: _references_fingerprint(s.images) for s in spec.subjects}
    present = [job for job in jobs if (spec.output_dir / job.path).is_file()]
    scorers = _Scorers(spec, device)
    bar = tqdm(total=len(present), desc="scoring", disable=not progress)
    try:
        for job in present:
            video = spec.output_dir / job.path
            sha = _file_hash(video)
            wanted = _metric_settings(spec, refs[job.subject])
            record = cache.get(job.path)
            groups = {}
            if record is not None and record.get("sha") == sha:
                groups = {
                    name: values
                    for name, values in record.get("groups", {}).items()
                    if name in wanted and values.get("settings") == _json_roundtrip(wanted[name])
                }
            todo = [name for name in wanted if name not in groups]
            if todo or record is None or record.get("sha") != sha:
                frames = read_video(video)
                subject = spec.subject(job.subject)
                for name in todo:
                    values = _score_group(name, frames, job, subject, scorers, spec)
                    groups[name] = {
                        "settings": _json_roundtrip(wanted[name]),
                        "values": _json_roundtrip({k: _clean(v) for k, v in values.items()}),
                    }
                cache.put({**job.fields(), "sha": sha, "groups": groups})
                if todo:
                    stats.scored.append(job.path)
            bar.update(1)
    finally:
        bar.close()


def _clean(value):
    if isinstance(value, float | np.floating):
        return _nan_to_none(value)
    return value


# --- reports -------------------------------------------------------------------------------
def collect_rows(spec: BenchmarkSpec, cache: MetricsCache | None = None) -> list[dict]:
    """One row per existing video of the spec, with the metrics of the cache (or, without a
    cache file, of ``per_video.csv``); videos whose file changed since scoring get none."""
    out = spec.output_dir
    cache = cache or MetricsCache(out / CACHE_FILE)
    csv_rows: dict[str, dict] = {}
    if not cache.records and (out / "per_video.csv").is_file():
        csv_rows = {r["path"]: r for r in report.read_per_video_csv(out / "per_video.csv")}
    refs = {s.name: _references_fingerprint(s.images) for s in spec.subjects}
    rows = []
    for job in spec.jobs():
        video = out / job.path
        if not video.is_file():
            continue
        method = spec.method(job.method)
        row = {**job.fields(), "schedule": method.schedule.describe()}
        record = cache.get(job.path)
        wanted = _metric_settings(spec, refs[job.subject])
        if record is not None and record.get("sha") == _file_hash(video):
            for name, group in record.get("groups", {}).items():
                if name in wanted and group.get("settings") == _json_roundtrip(wanted[name]):
                    row.update(group.get("values", {}))
        elif job.path in csv_rows:
            old = csv_rows[job.path]
            row.update({k: old.get(k) for k in (*METRIC_KEYS, *report.READING_COLUMNS) if k in old})
        rows.append(row)
    return rows


def write_reports(
    spec: BenchmarkSpec, rows: list[dict] | None = None, cache: MetricsCache | None = None
) -> Path:
    """Write per_video.csv, summary.csv, summary.md, charts/*.png and index.html from
    ``rows`` (by default: the cached metrics of the videos that exist). Generates nothing."""
    out = spec.output_dir
    if rows is None:
        rows = collect_rows(spec, cache)
    names = [m.name for m in spec.methods]
    schedules = {m.name: _sampling_label(m) for m in spec.methods}
    jobs = spec.jobs()
    counts = {
        name: (
            sum(1 for r in rows if r["method"] == name),
            sum(1 for j in jobs if j.method == name),
        )
        for name in names
    }
    summary = report.summarise(rows, names)
    report.write_per_video_csv(out / "per_video.csv", rows)
    report.write_summary_csv(out / "summary.csv", summary, schedules)

    notes = [
        f"Benchmark **{spec.name}**: {len(spec.methods)} methods × {len(spec.subjects)} "
        f"subjects × {sum(len(s.prompts) for s in spec.subjects)} prompts in all × "
        f"{len(spec.seeds)} seeds = {len(jobs)} videos; {len(rows)} exist."
    ]
    if spec.description:
        notes.append(spec.description.strip())
    unscored = sum(1 for r in rows if not any(k in r for k in METRIC_KEYS))
    if unscored:
        notes.append(f"{unscored} videos have no metrics yet (run the benchmark to score them).")
    published = [{"source": g.source, "rows": g.rows, "note": g.note} for g in spec.published]
    text = report.summary_markdown(
        f"{spec.name}: results", summary, schedules, counts, published, notes
    )
    report.write_text(out / "summary.md", text)

    charts = []
    for key in report.METRIC_KEYS:
        estimates = [summary[name].get(key) for name in names]
        if not any(e is not None and e.n for e in estimates):
            continue
        metric = report.METRIC_BY_KEY[key]
        empty = report.Estimate(0, math.nan, math.nan, math.nan, math.nan)
        chart = f"charts/{key}.png"
        report.bar_chart(
            out / chart,
            f"{metric.label}: {spec.name}",
            metric.label,
            names,
            [e or empty for e in estimates],
            metric.digits,
        )
        charts.append(chart)

    by_key = {(r["method"], r["subject"], r["prompt_index"], r["seed"]): r for r in rows}
    paths = {key: row["path"] for key, row in by_key.items()}
    gifs = {
        Path(j.path).with_suffix(".gif").as_posix()
        for j in jobs
        if (out / j.path).with_suffix(".gif").is_file()
    }
    layout = [(s.name, list(enumerate(s.prompts))) for s in spec.subjects]
    page = report.index_html(
        f"{spec.name}: videos",
        layout,
        [(m.name, schedules[m.name]) for m in spec.methods],
        spec.seeds,
        by_key,
        paths,
        gifs,
        charts,
    )
    report.write_text(out / "index.html", page)
    return out


def _sampling_label(method: MethodSpec) -> str:
    if method.module == "none":
        return "base model alone (token dropped)"
    return method.schedule.describe()
