"""Every setting of training and sampling, once, with the paper's values as defaults.

A field's help text lives in its metadata; the CLI's flags are made from these dataclasses
(``cli/args.py``), config files (YAML, JSON or TOML, keys as the field names) fill them, and
the Python API takes them as they are. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib
import yaml

from .errors import UserError

#: Dynamic Weighted Video Sampling as the paper runs it: the subject module at LAMBDA_S for
#: the first K of 50 DDIM steps, then at LAMBDA_L
LAMBDA_S = 0.4
LAMBDA_L = 0.8
K = 5
#: the authors' CLIP (OpenAI ViT-B/32) and DINO models for the metrics
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DINO = "facebook/dino-vits16"
DTYPES = ("float32", "float16", "bfloat16")


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its help text (and, where it differs from the field's name,
    its command-line flag) in the metadata."""
    metadata = {"help": help, "flag": flag, "metavar": metavar}
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines one subject-learning run.

    Defaults follow the paper (AdamW, lr 3e-5, weight decay 1e-2, 10k iterations, prior weight
    1.0, LoRA rank 4) and the authors' implementation (4-frame static clips, Custom Diffusion
    augmentation).
    """

    base: str = setting(
        "shapes",
        help="base model: 'shapes' (built in), 'tiny', a diffusers text-to-video folder / hub "
        "id, 'videocrafter2:/path/model.ckpt' or a converted VideoCrafter2 folder",
    )
    base_config: str | None = setting(
        None,
        help="original YAML config of a videocrafter2: checkpoint (default: read off the tensors)",
    )
    vae_chunk_size: int | None = setting(
        None, help="frames per VAE call; lower it to save memory (default: the model's)"
    )
    instance_data_dir: str = setting("", help="folder with 3-10 photos of the subject")
    instance_prompt: str = setting(
        "", help="prompt with the subject's new token, e.g. 'video of a <new1> dog'"
    )
    class_prompt: str = setting(
        "", help="prompt for the subject's class, e.g. 'video of a dog' (prior preservation)"
    )
    output_dir: str = setting("", help="where the subject module and checkpoints are written")
    class_data_dir: str | None = setting(
        None,
        help="folder of class images; when absent they are generated with the base model "
        "and cached",
    )
    num_class_images: int = setting(
        200, help="class images to generate when --class-data-dir is absent"
    )
    class_sampling_steps: int = setting(50, help="DDIM steps for each generated class image")
    prior_loss_weight: float = setting(
        1.0, help="weight of the class prior-preservation loss (0 turns it off)"
    )
    lora_targets: str = setting(
        "spatial-qkv",
        help="layer preset: spatial-qkv (paper), spatial-cross-qkv (the paper's ablation "
        "without self-attention), spatial-cross-kv (Custom Diffusion), spatial-qkvo",
    )
    lora_target_override: list[str] | None = setting(
        None,
        help="comma-separated projections inside each spatial block, e.g. attn1.to_q,attn2.to_v",
    )
    rank: int = setting(4, help="LoRA rank")
    initializer_words: dict[str, str] = setting(
        default_factory=dict,
        help="start a token's embedding from WORD (default: the word after the token)",
        flag="--initializer-word",
        metavar="TOKEN=WORD",
    )
    train_frames: int = setting(4, help="frames in each static training clip")
    height: int | None = setting(None, help="training height (default: the base model's)")
    width: int | None = setting(None, help="training width (default: the base model's)")
    augment: bool = setting(
        True,
        help="Custom Diffusion rescale augmentation with masked loss, and horizontal flips",
    )
    learning_rate: float = setting(3e-5, help="AdamW learning rate")
    scale_lr: bool = setting(
        False, help="multiply the learning rate by GPUs x batch size x accumulation steps"
    )
    weight_decay: float = setting(1e-2, help="AdamW weight decay")
    adam_beta1: float = setting(0.9, help="AdamW beta1")
    adam_beta2: float = setting(0.999, help="AdamW beta2")
    adam_epsilon: float = setting(1e-8, help="AdamW epsilon")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm (0: no clipping)")
    lr_scheduler: str = setting(
        "constant", help="constant, constant_with_warmup, linear, cosine, ..."
    )
    lr_warmup_steps: int = setting(0, help="learning-rate warm-up steps")
    loss: str = setting("mse", help="mse (the paper) or l1 (the authors' code)")
    train_batch_size: int = setting(1, help="instance clips per step (as many class clips)")
    gradient_accumulation_steps: int = setting(1, help="micro-batches per optimizer step")
    max_train_steps: int = setting(10_000, help="optimizer steps")
    gradient_checkpointing: bool = setting(False, help="trade compute for memory in the UNet")
    mixed_precision: str = setting("no", help="no, fp16 or bf16")
    seed: int = setting(0, help="seed of every random draw of the run")
    checkpointing_steps: int = setting(500, help="save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = setting(3, help="keep only the newest N checkpoints")
    resume_from_checkpoint: str | None = setting(None, help="'latest' or a checkpoint folder")
    overwrite: bool = setting(
        False, help="replace an existing subject module and its checkpoints in --output-dir"
    )

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
    """How one video is sampled: the subject module's weight at each step (Dynamic Weighted
    Video Sampling) and the sampler's settings. ``None`` means the base model's own default
    (``ModelDefaults``), which :meth:`with_defaults` fills in."""

    lambda_s: float = setting(LAMBDA_S, help="subject-module weight while motion is laid out")
    lambda_l: float = setting(LAMBDA_L, help="subject-module weight while appearance is repaired")
    k: int = setting(K, help="steps at --lambda-s before switching to --lambda-l")
    constant_weight: float | None = setting(
        None, help="one subject-module weight at every step (the paper's baseline)"
    )
    num_inference_steps: int | None = setting(
        None, help="DDIM steps (default: the base model's, 50)", flag="--steps"
    )
    guidance_scale: float | None = setting(
        None, help="classifier-free guidance (default: the base model's, 12.0 for VideoCrafter2)"
    )
    eta: float | None = setting(None, help="DDIM eta (default: the base model's)")
    num_frames: int | None = setting(None, help="frames (default: the base model's)")
    height: int | None = setting(None, help="height (default: the base model's)")
    width: int | None = setting(None, help="width (default: the base model's)")
    fps: int | None = setting(None, help="frame rate it is made and saved at")
    negative_prompt: str | None = setting(None, help="prompt guidance steers away from")
    seed: int = setting(0, help="seed of the initial noise and of DDIM's noise")

    def with_defaults(self, defaults: Any) -> SampleConfig:
        """A copy whose ``None`` sampler settings come from ``defaults`` (``ModelDefaults``)."""
        names = [f.name for f in dataclasses.fields(defaults)]
        return dataclasses.replace(
            self, **{n: getattr(defaults, n) for n in names if getattr(self, n) is None}
        )


#: the sampler settings of SampleConfig (what a benchmark's ``generation:`` may set)
SAMPLER_FIELDS = (
    "num_inference_steps",
    "guidance_scale",
    "eta",
    "num_frames",
    "height",
    "width",
    "fps",
    "negative_prompt",
)


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of a config dataclass."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def default_device(device: str | None = None) -> str:
    """``device``, or ``cuda`` when there is one, else ``cpu``."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(name: str | None, device: str):
    """The torch dtype called ``name``; by default float16 on CUDA, float32 elsewhere."""
    import torch

    return getattr(torch, name or ("float16" if device.startswith("cuda") else "float32"))


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
