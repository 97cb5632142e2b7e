"""How a benchmark method's ``train:`` settings become the TrainConfig of one subject."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from ..config import TrainConfig, config_to_dict, merge_config
from ..errors import UserError
from ..models.plugins import named_bases
from ..prompts import find_tokens

if TYPE_CHECKING:
    from .spec import BenchmarkSpec, MethodSpec, SubjectSpec

DEFAULT_INSTANCE_PROMPT = "video of a {token} {class_word}"
DEFAULT_CLASS_PROMPT = "video of a {class_word}"
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


def presets() -> dict:
    """The subject-training presets a method's ``train: {preset: NAME}`` may start from:
    the recipe of each lab model, by its name (``shapes``)."""
    return {name: base.lab for name, base in named_bases().items() if base.lab is not None}


def train_config(spec: BenchmarkSpec, method: MethodSpec, subject: SubjectSpec) -> TrainConfig:
    """The TrainConfig that trains ``method``'s module for ``subject``."""
    where = f"method {method.name!r}: train"
    overrides = dict(method.train)
    preset = overrides.pop("preset", None)
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
    out = spec.module_dir(method, subject)
    if preset is None:
        values: dict[str, Any] = {
            "instance_prompt": DEFAULT_INSTANCE_PROMPT.format(**fill),
            "class_prompt": DEFAULT_CLASS_PROMPT.format(**fill),
        }
    elif preset in presets():
        lab = presets()[preset]
        steps = overrides.get("max_train_steps", 300)
        try:
            steps = TypeAdapter(int).validate_python(steps)
        except ValidationError:
            pass
        if not isinstance(steps, int) or steps < 1:
            raise UserError(f"{where}.max_train_steps must be a positive integer, got {steps!r}")
        bundled = subject.name if subject.name in lab.subjects else next(iter(lab.subjects))
        values = config_to_dict(
            lab.recipe(bundled, out, steps, overrides.get("lora_targets", "spatial-qkv"))
        )
        values["instance_prompt"] = f"a {subject.token} {subject.class_word}"
        values["class_prompt"] = f"a {subject.class_word}"
    else:
        known = ", ".join(presets())
        raise UserError(f"{where}.preset: unknown preset {preset!r}; known: {known}")
    values.update(
        base=method.base,
        base_config=spec.base_config,
        vae_chunk_size=spec.vae_chunk_size,
        instance_data_dir=str(subject.images),
        output_dir=str(out),
    )
    try:
        config = merge_config(TrainConfig, values, overrides)
        config.validate()
    except (UserError, TypeError) as exc:
        raise UserError(f"{where}: {exc}") from None
    if subject.token not in find_tokens(config.instance_prompt):
        raise UserError(
            f"{where}.instance_prompt {config.instance_prompt!r} must use the subject's token "
            f"{subject.token}"
        )
    return config
