"""Benchmark specs: which subjects, prompts, seeds and methods to compare, and how to score them.

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
        train: {lora_targets: spatial-qkv}      # TrainConfig settings; or preset: shapes
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

The file's structure is checked by the pydantic models below (unknown keys are refused with
the nearest known one); what ties its parts together (prompts that name their subject,
methods that share modules, folders that exist) is checked when it is built into a
:class:`BenchmarkSpec`. Every error names the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from ..config import DEFAULT_CLIP, DEFAULT_DINO, SampleConfig
from ..errors import UserError
from ..io.images import list_images
from ..prompts import TOKEN_PATTERN, find_tokens, strip_tokens
from ..sampling.dwvs import BandSchedule, DynamicWeightSchedule
from .overrides import apply_overrides, slugify, suggest
from .schema import (
    TOP_KEYS,
    BandSettings,
    DwvsSettings,
    Method,
    Metrics,
    SpecFile,
    Subject,
    explain,
    read_spec_file,
)
from .spec import (
    OFF,
    PACKAGE_PREFIX,
    PAPER_DWVS,
    BenchmarkSpec,
    MethodSpec,
    ScheduleChoice,
    SubjectSpec,
)
from .training import train_config

#: the weight schedules a method's ``schedule:`` may name, with their spec sections
SCHEDULES = {"dwvs": (DynamicWeightSchedule, DwvsSettings), "band": (BandSchedule, BandSettings)}


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
    try:
        raw = read_spec_file(path)
        data, values = apply_overrides(raw, overrides, TOP_KEYS)
        try:
            parsed = SpecFile.model_validate(data)
        except ValidationError as exc:
            raise UserError(explain(exc)) from None
        spec = _build_spec(parsed, path, data_root, output_dir, values, check_images)
    except UserError as exc:
        raise UserError(f"benchmark spec {path}: {exc}") from None
    for method in spec.methods:
        owner = method.owner if method.module == "reuse" else method.name
        written = next((m.get("base") for m in _raw_methods(raw) if m.get("name") == owner), None)
        written = written if written is not None else raw.get("base")
        method.base_as_written = str(written) if written is not None else method.base
    return spec


def _raw_methods(raw: dict) -> list[dict]:
    methods = raw.get("methods")
    return [m for m in methods if isinstance(m, dict)] if isinstance(methods, list) else []


def _resolve_place(value: str, base_dir: Path) -> Path:
    """``package:shapes/subjects`` -> inside the installed customcrafter package; relative
    paths -> under ``base_dir``."""
    if value.startswith(PACKAGE_PREFIX):
        return Path(__file__).resolve().parent.parent / value[len(PACKAGE_PREFIX) :]
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _build_spec(
    data: SpecFile,
    spec_path: Path,
    data_root: str | Path | None,
    output_dir: str | Path | None,
    variables: dict,
    check_images: bool,
) -> BenchmarkSpec:
    here = spec_path.parent
    if output_dir is not None:
        out = Path(output_dir).expanduser().resolve()
    elif data.output_dir is None:
        raise UserError("give output_dir (relative paths are under the spec's folder)")
    else:
        out = _resolve_place(data.output_dir, here).resolve()
    if data_root is not None:
        root: Path | None = _resolve_place(str(data_root), Path.cwd())
    elif data.data_root is not None:
        root = _resolve_place(data.data_root, here)
    else:
        root = None
    if root is not None and check_images and not root.is_dir():
        raise UserError(
            f"the data root {root} does not exist; pass --data-root DIR (the folder that holds "
            "the subjects' image folders)"
        )
    generation = data.generation.model_dump(exclude_none=True)
    try:
        SampleConfig(**{k: v for k, v in generation.items() if k != "save_fps"}).validate()
    except UserError as exc:
        raise UserError(f"generation: {exc}") from None
    subjects = [_build_subject(s, root, check_images) for s in data.subjects]
    _check_distinct("subjects", [s.name for s in subjects])
    spec = BenchmarkSpec(
        name=data.name or spec_path.stem,
        spec_path=spec_path,
        output_dir=out,
        data_root=root,
        seeds=data.seeds,
        generation=generation,
        gif=data.gif,
        metrics=_build_metrics(data.metrics, here),
        subjects=subjects,
        methods=_build_methods(data.methods, data.base),
        published=data.published,
        base_config=(
            str(_resolve_place(data.base_config, here)) if data.base_config is not None else None
        ),
        vae_chunk_size=data.vae_chunk_size,
        description=data.description or "",
        variables=variables,
    )
    for method in spec.methods:
        for subject in subjects:
            if method.module == "train":
                train_config(spec, method, subject)  # raises on bad settings
            module = spec.module_path(method, subject)
            if method.module == "path" and check_images and not module.is_file():
                raise UserError(
                    f"method {method.name!r}: no subject module for {subject.name!r} at {module}"
                )
    return spec


def _check_distinct(what: str, names: list[str]) -> None:
    slugs: dict[str, str] = {}
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"{what}: the name {name!r} appears twice")
        slug = slugify(name)
        if slug in slugs:
            raise UserError(
                f"{what} {slugs[slug]!r} and {name!r} would share the folder name {slug!r}; "
                "rename one"
            )
        slugs[slug] = name


def _build_metrics(metrics: Metrics, here: Path) -> Metrics:
    """The metrics with local model folders resolved against the spec's folder."""

    def model(key: str) -> str | None:
        value = getattr(metrics, key)
        if value is None:
            return None
        local = _resolve_place(value, here)
        if local.is_dir():
            return str(local)
        if value.startswith((".", "/", "~", PACKAGE_PREFIX)) or value.count("/") > 1:
            raise UserError(
                f"metrics.{key}: the model folder {local} does not exist; give a folder written "
                "by save_pretrained or a hub id such as "
                + (DEFAULT_CLIP if key == "clip" else DEFAULT_DINO)
            )
        return value  # a hub id: loaded (or reported missing) when the first video is scored

    return metrics.model_copy(update={"clip": model("clip"), "dino": model("dino")})


def _build_subject(item: Subject, root: Path | None, check_images: bool) -> SubjectSpec:
    where = f"subject {item.name!r}"
    local = item.images.startswith(PACKAGE_PREFIX) or Path(item.images).expanduser().is_absolute()
    if root is None and not local:
        raise UserError(
            f"{where}: images {item.images!r} is a relative folder but the spec has no "
            "data_root; add data_root to the spec or pass --data-root DIR"
        )
    images = _resolve_place(item.images, root or Path.cwd())
    if check_images:
        if not images.is_dir():
            hint = f" under the data root {root}" if root is not None else ""
            raise UserError(
                f"{where}: the image folder {images} does not exist{hint}; pass --data-root "
                "DIR pointing at the folder that holds the subjects' image folders"
            )
        list_images(images, f"{where}: image")
    token, class_word = item.token.strip(), item.class_word.strip()
    if not TOKEN_PATTERN.fullmatch(token):
        raise UserError(f"{where}: token {token!r} must look like <new1> (angle brackets)")
    for j, prompt in enumerate(item.prompts):
        tokens = find_tokens(prompt)
        if token not in tokens:
            raise UserError(
                f"{where}: prompt {j} {prompt!r} does not use the subject token {token}; "
                f"write it before the class word, e.g. 'a {token} {class_word} running'"
            )
        if tokens != [token]:
            others = ", ".join(t for t in tokens if t != token)
            raise UserError(f"{where}: prompt {j} {prompt!r} uses other tokens ({others})")
        if not re.search(rf"(^|\s){re.escape(class_word)}(\s|$|[.,;:!?])", strip_tokens(prompt)):
            raise UserError(
                f"{where}: prompt {j} {prompt!r} does not name the class word "
                f"{class_word!r}; the base-model baseline and CLIP-T read the prompt without "
                f"the token, so write '{token} {class_word}'"
            )
    if len(set(item.prompts)) != len(item.prompts):
        raise UserError(f"{where}: a prompt appears twice")
    return SubjectSpec(item.name, slugify(item.name), images, class_word, token, list(item.prompts))


def _build_schedule(raw, where: str, default: ScheduleChoice) -> ScheduleChoice:
    if raw is None:
        return default
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("off", "none")):
        return OFF
    if isinstance(raw, str) and raw.strip().lower() == "dwvs":
        return PAPER_DWVS
    if isinstance(raw, Mapping) and len(raw) == 1:
        kind, value = next(iter(raw.items()))
        try:
            if kind == "constant":
                return ScheduleChoice(kind, DynamicWeightSchedule.constant(float(value)))
            if kind in SCHEDULES:
                schedule, section = SCHEDULES[kind]
                given = section.model_validate(value or {})
                return ScheduleChoice(kind, schedule(**given.model_dump()))
        except (TypeError, ValueError, UserError) as exc:
            detail = explain(exc) if isinstance(exc, ValidationError) else str(exc)
            raise UserError(f"{where}.{kind}: {detail}") from None
    kinds = ", ".join(
        f"{{{kind}: {{{', '.join(section.model_fields)}}}}}"
        for kind, (_, section) in SCHEDULES.items()
    )
    raise UserError(f"{where} must be one of {kinds}, {{constant: W}} or off, got {raw!r}")


def _build_methods(items: list[Method], base_default: str | None) -> list[MethodSpec]:
    _check_distinct("methods", [m.name for m in items])
    by_name = {item.name: item for item in items}
    methods = []
    for item in items:
        where = f"method {item.name!r}"
        sources = [k for k in ("train", "module", "subject") if k in item.model_fields_set]
        if len(sources) != 1:
            raise UserError(
                f"{where}: give exactly one of 'train' (train its subject modules), 'module' "
                "(reuse another method's), or 'subject' (none, or a folder with {subject})"
            )
        owner, path, kind = None, None, {"train": "train", "module": "reuse"}.get(sources[0])
        if kind == "reuse":
            owner = _resolve_owner(item.name, by_name, where)
        elif kind is None:
            if item.subject is None or item.subject.strip().lower() == "none":
                kind = "none"
            elif "{subject}" not in item.subject:
                raise UserError(
                    f"{where}: subject must be none or a path containing {{subject}}, "
                    f"got {item.subject!r}"
                )
            else:
                kind, path = "path", item.subject
        default = OFF if kind == "none" else PAPER_DWVS
        schedule = _build_schedule(item.schedule, f"{where}.schedule", default)
        if kind == "none" and schedule.kind != "off":
            raise UserError(f"{where}: a method without a subject module needs schedule: off")
        base = item.base
        if kind == "reuse":
            owner_base = by_name[owner].base or base_default
            if base is not None and base != owner_base:
                raise UserError(
                    f"{where}: it reuses {owner!r}'s modules, which are trained on "
                    f"{owner_base!r}; drop its base (or use the same one)"
                )
            base = owner_base
        base = base if base is not None else base_default
        if not base:
            raise UserError(f"{where}: no base model; set base on the method or at the top level")
        methods.append(
            MethodSpec(
                name=item.name,
                slug=slugify(item.name),
                base=base,
                schedule=schedule,
                module=kind,
                owner=owner,
                train=dict(item.train or {}),
                path=path,
                description=item.description,
            )
        )
    return methods


def _resolve_owner(name: str, by_name: dict[str, Method], where: str) -> str:
    """Follow ``module:`` links to the method that trains the modules."""
    seen = [name]
    current = by_name[name]
    while "module" in current.model_fields_set:
        target = current.module
        if target not in by_name:
            raise UserError(
                f"{where}: module {target!r} is not the name of a method{suggest(target, by_name)}"
            )
        if target in seen:
            raise UserError(
                f"{where}: module links go round in a circle: {' -> '.join([*seen, target])}"
            )
        seen.append(target)
        current = by_name[target]
    if "train" not in current.model_fields_set:
        raise UserError(
            f"{where}: module {seen[-1]!r} has no subject modules of its own to share "
            "(it must have 'train:')"
        )
    return seen[-1]
