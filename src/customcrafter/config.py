"""Settings for training the subject module and for sampling, with the paper's values as defaults.

Every field can be set from the CLI (``--learning-rate``), from a config file (YAML, JSON or
TOML, keys as the field names) and from Python.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib
import yaml

from .errors import UserError


@dataclass
class TrainConfig:
    """Everything that defines one subject-learning run.

    Defaults follow the paper (AdamW, lr 3e-5, weight decay 1e-2, 10k iterations, prior weight
    1.0, LoRA rank 4) and the authors' implementation (4-frame static clips, Custom Diffusion
    augmentation).
    """

    base: str = "shapes"
    base_config: str | None = None
    vae_chunk_size: int | None = None
    instance_data_dir: str = ""
    instance_prompt: str = ""
    class_prompt: str = ""
    output_dir: str = ""
    class_data_dir: str | None = None
    num_class_images: int = 200
    class_sampling_steps: int = 50
    prior_loss_weight: float = 1.0
    # Spatial Subject Learning Module
    lora_targets: str = "spatial-qkv"
    lora_target_override: list[str] | None = None
    rank: int = 4
    initializer_words: dict[str, str] = field(default_factory=dict)
    # data
    train_frames: int = 4
    height: int | None = None
    width: int | None = None
    augment: bool = True
    # optimisation
    learning_rate: float = 3e-5
    scale_lr: bool = False
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    loss: str = "mse"
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 10_000
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    seed: int = 0
    # checkpoints
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    overwrite: bool = False

    def validate(self) -> None:
        if self.loss not in ("mse", "l1"):
            raise UserError(f"--loss must be 'mse' or 'l1', got {self.loss!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(
                f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}"
            )
        for name in ("rank", "train_frames", "max_train_steps", "train_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gradient_accumulation_steps < 1 or self.checkpointing_steps < 1:
            raise UserError("--gradient-accumulation-steps and --checkpointing-steps must be >= 1")
        if self.prior_loss_weight < 0:
            raise UserError("--prior-loss-weight must be >= 0 (0 turns prior preservation off)")
        if self.prior_loss_weight > 0 and not self.class_prompt:
            raise UserError(
                "prior preservation needs --class-prompt (e.g. 'video of a dog'); "
                "pass --prior-loss-weight 0 to train without it"
            )


@dataclass
class SampleConfig:
    """Sampling settings. ``None`` means "the base model's own default"."""

    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    eta: float | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None
    negative_prompt: str | None = None
    seed: int = 0


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML config file into a dict of field names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text()
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
    """Build ``cls`` from dicts applied in order (later wins); unknown keys are an error."""
    names = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in names:
                raise UserError(
                    f"unknown setting {key!r}; known settings: {', '.join(sorted(names))}"
                )
            values[key] = value
    return cls(**values)


def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
