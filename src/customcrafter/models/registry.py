"""``load_base_model``: the one place that turns a ``--base`` value into a model."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import TrainConfig, check_value, field_named
from ..errors import UserError
from .base import BaseVideoModel, LoraNaming
from .diffusers_t2v import DiffusersT2VModel, build_tiny_t2v
from .hunyuan15 import HunyuanVideo15Model, build_tiny_hunyuan15, is_hunyuan15_folder
from .ltx2 import LTX2Model, build_tiny_ltx2, is_ltx2_folder
from .plugins import named_base, named_bases
from .videocrafter2 import (
    VideoCrafter2Model,
    convert_videocrafter2,
    is_converted,
    load_openclip_tokenizer,
)
from .wan import WanModel, build_tiny_wan, is_wan_folder

_BUILT_IN_HELP = (
    "'tiny' (a randomly initialised test model whose output is noise), "
    "a diffusers text-to-video folder or hub id such as 'damo-vilab/text-to-video-ms-1.7b' "
    "or 'cerspense/zeroscope_v2_576w' (optionally prefixed 'diffusers:'), "
    "a diffusers Wan folder or hub id such as 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers' "
    "(optionally prefixed 'wan:'; 'tiny-wan' and the two-expert 'tiny-wan-a14b' are random "
    "test ones), a diffusers HunyuanVideo 1.5 folder or hub id (optionally prefixed 'hunyuan15:'; "
    "'tiny-hunyuan15' a random test one), a diffusers LTX-2 folder or hub id such as "
    "'Lightricks/LTX-2' (video with sound; optionally prefixed 'ltx2:'; 'tiny-ltx2' a random "
    "test one), "
    "'videocrafter2:/path/to/model.ckpt' (the original VideoCrafter2 checkpoint), "
    "or a folder written by 'customcrafter convert videocrafter2'"
)


def base_model_help() -> str:
    """What ``--base`` takes: the named bases the installed packages add, then the rest."""
    named = [f"'{name}' ({base.help})" for name, base in named_bases().items()]
    return ", ".join([*named, _BUILT_IN_HELP])


def load_base_model(
    spec: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: str | Path | None = None,
    vae_chunk_size: int | None = None,
) -> BaseVideoModel:
    """Load the base model named by ``spec`` (see ``BASE_MODEL_HELP``), frozen, in eval mode.

    ``config`` is the original YAML config of a ``videocrafter2:`` checkpoint (by default
    its architecture is read off the tensors); ``vae_chunk_size`` the frames per VAE call.
    """
    if not spec:
        raise UserError(f"no base model given; use one of: {base_model_help()}")
    if config and not spec.startswith("videocrafter2:"):
        raise UserError("a base config applies only to 'videocrafter2:' checkpoints")
    named = named_base(spec)
    if named is not None:
        model: BaseVideoModel = named.load()
        model.name, model.lab = spec, named.lab
    elif spec == "tiny":
        model = build_tiny_t2v()
    elif spec in ("tiny-wan", "tiny-wan-a14b"):
        model = build_tiny_wan(two_experts=spec == "tiny-wan-a14b")
    elif spec == "tiny-hunyuan15":
        model = build_tiny_hunyuan15()
    elif spec == "tiny-ltx2":
        model = build_tiny_ltx2()
    elif spec.startswith("ltx2:") or _names(spec, is_ltx2_folder):
        model = LTX2Model.from_pretrained(spec.removeprefix("ltx2:"), torch_dtype=dtype)
    elif spec.startswith("hunyuan15:") or _names(spec, is_hunyuan15_folder):
        model = HunyuanVideo15Model.from_pretrained(
            spec.removeprefix("hunyuan15:"), torch_dtype=dtype
        )
    elif spec.startswith("wan:") or _names_wan(spec):
        model = WanModel.from_pretrained(spec.removeprefix("wan:"), torch_dtype=dtype)
    elif spec.startswith("videocrafter2:"):
        checkpoint = spec.removeprefix("videocrafter2:")
        if is_converted(checkpoint):
            model = VideoCrafter2Model.from_converted(checkpoint)
        else:
            model = VideoCrafter2Model.from_checkpoint(checkpoint, config=config)
    elif is_converted(spec):
        model = VideoCrafter2Model.from_converted(spec)
    elif spec.startswith("diffusers:") or ":" not in spec:
        model = DiffusersT2VModel.from_pretrained(
            spec.removeprefix("diffusers:"), torch_dtype=dtype
        )
    else:
        kind = spec.split(":", 1)[0]
        raise UserError(f"unknown base model kind {kind!r}; use one of: {base_model_help()}")
    if vae_chunk_size is not None:
        bounds = field_named(TrainConfig, "vae_chunk_size")  # its range, declared there
        check_value(bounds, vae_chunk_size, "the VAE chunk size")
        model.vae_chunk_size = vae_chunk_size
    if dtype is not None:
        model.remember_weights()  # of the weights as they were, not as cast
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def convert_checkpoint(
    kind: str,
    checkpoint: str | Path,
    out_dir: str | Path,
    config: str | Path | None = None,
    tokenizer: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an original checkpoint of the model ``kind`` (``videocrafter2``) into a folder
    that loads fast as ``--base OUT_DIR``; ``tokenizer``: the CLIP tokenizer to bundle."""
    if kind != "videocrafter2":
        raise UserError(f"there is no converter for {kind!r}; convert videocrafter2 checkpoints")
    return convert_videocrafter2(
        checkpoint,
        out_dir,
        config=config,
        tokenizer=load_openclip_tokenizer(tokenizer),
        dtype=dtype,
        overwrite=overwrite,
    )


#: every backend, for what is asked of a family rather than of a loaded model
BACKENDS = (VideoCrafter2Model, DiffusersT2VModel, WanModel, HunyuanVideo15Model, LTX2Model)


def lora_namings() -> list[LoraNaming]:
    """How each family that exports names its layers in other tools' LoRA files."""
    return [backend.lora_naming for backend in BACKENDS if backend.lora_naming is not None]


#: the test models built in code
TINY = ("tiny", "tiny-wan", "tiny-wan-a14b", "tiny-hunyuan15", "tiny-ltx2")


def check_base_model(spec: str) -> None:
    """Refuse, without loading anything, a ``--base`` that names nothing this machine has:
    not a named or test model, not a folder or checkpoint, not a hub id in the local cache."""
    if not spec:
        raise UserError(f"no base model given; use one of: {base_model_help()}")
    if spec in TINY or named_base(spec) is not None:
        return
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("videocrafter2", "wan", "hunyuan15", "ltx2", "diffusers"):
        spec = rest
    elif sep and not Path(spec).exists():
        raise UserError(f"unknown base model kind {kind!r}; use one of: {base_model_help()}")
    if Path(spec).expanduser().exists() or _cached(spec):
        return
    raise UserError(
        f"the base model {spec!r} is neither a folder here nor a model in the local Hugging "
        f"Face cache; use one of: {base_model_help()}"
    )


def _cached(spec: str) -> bool:
    """A hub id whose ``model_index.json`` is in the local Hugging Face cache."""
    if spec.count("/") != 1 or spec.startswith("/"):
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(spec, "model_index.json"), str)
    except ValueError:  # not a valid hub id
        return False


def _names_wan(spec: str) -> bool:
    """A Wan folder, or a hub id whose cached ``model_index.json`` names a Wan pipeline."""
    return _names(spec, is_wan_folder)


def _names(spec: str, is_folder) -> bool:
    """``is_folder(spec)``, or a hub id whose cached folder passes it."""
    if Path(spec).exists():
        return is_folder(spec)
    if spec.count("/") != 1 or ":" in spec:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a diffusers dependency
        return False
    cached = try_to_load_from_cache(spec, "model_index.json")
    return isinstance(cached, str) and is_folder(Path(cached).parent)
