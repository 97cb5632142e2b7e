"""Every setting of training and sampling, once, with the paper's values as defaults.

A field's help text lives in its metadata; the CLI's flags are made from these dataclasses
(``cli/args.py``), config files (YAML, JSON or TOML, keys as the field names) fill them, and
the Python API takes them as they are. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib
import yaml
from pydantic import TypeAdapter, ValidationError

from .errors import UserError

#: the seeds every random draw takes (what torch's and numpy's generators both accept)
SEED = {"minimum": 0, "maximum": 2**32 - 1}
#: the sizes a video may have (beyond them no model samples, and the numbers overflow)
MAX_FRAMES = 1024
SIDE = {"minimum": 1, "maximum": 8192}
#: the longest a run may be (beyond it the numbers overflow, and no run ends)
MAX_STEPS = 10_000_000
#: classifier-free guidance: 1 is none; beyond 100 a video is saturated noise
GUIDANCE = {"minimum": 0.0, "maximum": 100.0}
#: the authors' CLIP (OpenAI ViT-B/32) and DINO models for the metrics
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DINO = "facebook/dino-vits16"
DTYPES = ("float32", "float16", "bfloat16")
#: what the subject module's LoRA adapts, relative to each spatial transformer block
_QKV = ("to_q", "to_k", "to_v")
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    # the paper: Q, K, V of self- (attn1) and cross-attention (attn2)
    "spatial-qkv": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in _QKV),
    # the paper's ablation without the self-attention LoRA: Q, K, V of cross-attention only
    "spatial-cross-qkv": tuple(f"attn2.{p}" for p in _QKV),
    # Custom Diffusion: K and V of cross-attention only
    "spatial-cross-kv": ("attn2.to_k", "attn2.to_v"),
    # the paper's selection plus the output projections
    "spatial-qkvo": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in (*_QKV, "to_out.0")),
}
#: where the subject module goes in a two-expert model (Wan 2.2 A14B)
EXPERTS = ("low", "high", "both")
#: the learning-rate schedules diffusers' get_scheduler knows
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "piecewise_constant",
)


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
) -> Any:
    """A dataclass field with its help text, its bounds and, where it differs from the
    field's name, its command-line flag in the metadata.

    ``minimum`` / ``maximum`` (inclusive) and ``above`` / ``below`` (exclusive): the values
    the setting takes, checked by :func:`check_bounds` wherever it is given (command line,
    config file, benchmark spec, the app). ``slider_step`` / ``slider_max``: how the app
    shows it as a slider (``slider_max`` where the setting itself has no ``maximum``)."""
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
        None,
        help="frames per VAE call; lower it to save memory (default: the model's)",
        minimum=1,
        maximum=4096,
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
        200,
        help="class images to generate when --class-data-dir is absent",
        minimum=0,
        maximum=100_000,
    )
    class_sampling_steps: int = setting(
        50, help="DDIM steps for each generated class image", minimum=1, maximum=1000
    )
    class_videos: bool = setting(
        False,
        help="prior preservation on whole clips of the class (generated with the base model, "
        "so they move; or the videos in --class-data-dir) instead of still images repeated "
        "into static clips; not in the paper",
    )
    prior_loss_weight: float = setting(
        1.0,
        help="weight of the class prior-preservation loss (0 turns it off)",
        minimum=0.0,
        maximum=100.0,
    )
    lora_targets: str = setting(
        "spatial-qkv",
        help="layer preset: spatial-qkv (paper), spatial-cross-qkv (the paper's ablation "
        "without self-attention), spatial-cross-kv (Custom Diffusion), spatial-qkvo. On Wan, "
        "which has no temporal-only attention, the presets map to attn1 (self-attention over "
        "all frames and patches) and attn2 (cross-attention) of every block",
    )
    lora_target_override: list[str] | None = setting(
        None,
        help="comma-separated projections inside each spatial block, e.g. attn1.to_q,attn2.to_v",
    )
    rank: int = setting(4, help="LoRA rank", minimum=1, maximum=1024)
    initializer_words: dict[str, str] = setting(
        default_factory=dict,
        help="start a token's embedding from WORD (default: the word after the token)",
        flag="--initializer-word",
        metavar="TOKEN=WORD",
    )
    experts: str | None = setting(
        None,
        help="Wan 2.2 A14B: which expert the module goes in: high (the high-noise "
        "transformer, early steps), low (transformer_2, late steps) or both (default)",
        metavar="{low,high,both}",
    )
    identifier: str | None = setting(
        None,
        help="name the subject by this existing word (e.g. sks, written in the instance prompt "
        "before the class word: 'video of a sks dog') instead of a new token: no embedding is "
        "trained, so the LoRA alone carries the subject and exports to other tools, and the "
        "text encoder can leave the GPU during training",
        metavar="WORD",
    )
    train_frames: int | None = setting(
        None,
        help="frames in each static training clip (default: the base model's: 4, as the "
        "authors' code; 1 on Wan, each photo one latent frame, which kept more motion in "
        "the lab study, docs/results/lab.md)",
        minimum=1,
        maximum=MAX_FRAMES,
    )
    cache_inputs: bool | None = setting(
        None,
        help="encode the training clips with the VAE once (and, with --identifier, their "
        "captions with the text encoder), then train with those off the GPU; each photo "
        "becomes --cache-views augmented views drawn once instead of a new draw each step "
        "(default: on for Wan, off for the other bases)",
    )
    cache_views: int = setting(
        10,
        help="with --cache-inputs: augmented views encoded per photo (1 without --augment); "
        "each is one VAE encoding of every photo before training",
        minimum=1,
        maximum=100,
    )
    height: int | None = setting(None, help="training height (default: the base model's)", **SIDE)
    width: int | None = setting(None, help="training width (default: the base model's)", **SIDE)
    augment: bool = setting(
        True,
        help="Custom Diffusion rescale augmentation with masked loss, and horizontal flips",
    )
    learning_rate: float = setting(3e-5, help="AdamW learning rate", above=0.0, maximum=1.0)
    scale_lr: bool = setting(
        False, help="multiply the learning rate by GPUs x batch size x accumulation steps"
    )
    weight_decay: float = setting(1e-2, help="AdamW weight decay", minimum=0.0, maximum=10.0)
    adam_beta1: float = setting(0.9, help="AdamW beta1", minimum=0.0, below=1.0)
    adam_beta2: float = setting(0.999, help="AdamW beta2", minimum=0.0, below=1.0)
    adam_epsilon: float = setting(1e-8, help="AdamW epsilon", above=0.0, maximum=1.0)
    max_grad_norm: float = setting(
        1.0, help="gradient clipping norm (0: no clipping)", minimum=0.0, maximum=1e6
    )
    lr_scheduler: str = setting(
        "constant", help="constant, constant_with_warmup, linear, cosine, ..."
    )
    lr_warmup_steps: int = setting(
        0, help="learning-rate warm-up steps", minimum=0, maximum=MAX_STEPS
    )
    loss: str = setting("mse", help="mse (the paper) or l1 (the authors' code)")
    train_batch_size: int = setting(
        1, help="instance clips per step (as many class clips)", minimum=1, maximum=1024
    )
    gradient_accumulation_steps: int = setting(
        1, help="micro-batches per optimizer step", minimum=1, maximum=1024
    )
    max_train_steps: int = setting(10_000, help="optimizer steps", minimum=1, maximum=MAX_STEPS)
    gradient_checkpointing: bool = setting(False, help="trade compute for memory in the UNet")
    mixed_precision: str = setting("no", help="no, fp16 or bf16")
    seed: int = setting(0, help="seed of every random draw of the run", **SEED)
    checkpointing_steps: int = setting(
        500, help="save a resumable checkpoint every N steps", minimum=1, maximum=MAX_STEPS
    )
    checkpoints_total_limit: int | None = setting(
        3, help="keep only the newest N checkpoints", minimum=1, maximum=MAX_STEPS
    )
    resume_from_checkpoint: str | None = setting(None, help="'latest' or a checkpoint folder")
    overwrite: bool = setting(
        False, help="replace an existing subject module and its checkpoints in --output-dir"
    )

    def validate(self) -> None:
        """Check every value, before anything is loaded or written; values a config file
        wrote as text (``learning_rate: 1e-4`` is a string to YAML) become their type."""
        normalize(self)
        _one_of(self.loss, ("mse", "l1"), "--loss", "mse (the paper) or l1")
        _one_of(self.mixed_precision, ("no", "fp16", "bf16"), "--mixed-precision")
        _one_of(self.lr_scheduler, LR_SCHEDULERS, "--lr-scheduler")
        if self.lora_target_override is None:
            _one_of(self.lora_targets, tuple(TARGET_PRESETS), "--lora-targets")
        elif not self.lora_target_override:
            raise UserError("--lora-target-override names no layer; give e.g. attn1.to_q")
        check_bounds(self)
        if self.prior_loss_weight > 0 and not self.class_prompt:
            raise UserError(
                "prior preservation needs --class-prompt (e.g. 'video of a dog'); "
                "pass --prior-loss-weight 0 to train without it"
            )
        if self.prior_loss_weight > 0 and not self.class_data_dir and self.num_class_images < 1:
            raise UserError(
                "prior preservation needs class images: give --num-class-images 1 or more "
                "(or --class-data-dir), or pass --prior-loss-weight 0 to train without it"
            )
        if self.experts is not None:
            _one_of(self.experts, EXPERTS, "--experts")
        if self.identifier is not None and self.initializer_words:
            raise UserError(
                "--initializer-word starts a new token's embedding; with --identifier no "
                "token is learnt: drop one of them"
            )
        if self.class_videos and self.train_frames is not None and self.train_frames < 2:
            raise UserError(
                "--class-videos trains on moving class clips, which need --train-frames 2 or "
                f"more (got {self.train_frames}); drop --class-videos for 1-frame training"
            )


@dataclass
class SampleConfig:
    """How one video is sampled: the sampler's settings. ``None`` means the base model's own
    default (``ModelDefaults``), which :meth:`with_defaults` fills in. The subject module's
    weight at each step is the weight schedule's (``sampling.DynamicWeightSchedule``)."""

    num_inference_steps: int | None = setting(
        None,
        help="DDIM steps (default: the base model's, 50)",
        flag="--steps",
        minimum=1,
        maximum=1000,
    )
    guidance_scale: float | None = setting(
        None,
        help="classifier-free guidance (default: the base model's, 12.0 for VideoCrafter2)",
        **GUIDANCE,
    )
    guidance_scale_2: float | None = setting(
        None,
        help="Wan 2.2 A14B: guidance in the low-noise expert's steps (default: the model's, "
        "3.0; --guidance-scale is the high-noise expert's)",
        **GUIDANCE,
    )
    eta: float | None = setting(
        None,
        help="DDIM eta: 0 deterministic, 1 fresh noise at every step (default: the base model's)",
        minimum=0.0,
        maximum=1.0,
    )
    num_frames: int | None = setting(
        None, help="frames (default: the base model's)", minimum=1, maximum=MAX_FRAMES
    )
    height: int | None = setting(None, help="height (default: the base model's)", **SIDE)
    width: int | None = setting(None, help="width (default: the base model's)", **SIDE)
    fps: int | None = setting(
        None, help="frame rate it is made and saved at", minimum=1, maximum=240
    )
    negative_prompt: str | None = setting(None, help="prompt guidance steers away from")
    seed: int = setting(0, help="seed of the initial noise and of DDIM's noise", **SEED)

    def validate(self) -> None:
        """Check every value (``None`` stays the model's default)."""
        normalize(self)
        check_bounds(self)

    def with_defaults(self, defaults: Any) -> SampleConfig:
        """A copy whose ``None`` sampler settings come from ``defaults`` (``ModelDefaults``)."""
        names = [f.name for f in dataclasses.fields(defaults)]
        return dataclasses.replace(
            self, **{n: getattr(defaults, n) for n in names if getattr(self, n) is None}
        )


#: the sampler settings of SampleConfig (what a benchmark's ``generation:`` may set)
SAMPLER_FIELDS = tuple(f.name for f in fields(SampleConfig) if f.name != "seed")


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
