"""Base video diffusion models behind one interface, and ``load_base_model`` to pick one."""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults
from .diffusers_t2v import DiffusersT2VModel, build_tiny_t2v

__all__ = [
    "BaseVideoModel",
    "DiffusersT2VModel",
    "ModelDefaults",
    "build_tiny_t2v",
    "load_base_model",
]

BASE_MODEL_HELP = (
    "'tiny' (a randomly initialised test model whose output is noise), "
    "a diffusers text-to-video folder or hub id such as 'damo-vilab/text-to-video-ms-1.7b' "
    "or 'cerspense/zeroscope_v2_576w' (optionally prefixed 'diffusers:'), "
    "or 'videocrafter2:/path/to/model.ckpt' (the original VideoCrafter2 checkpoint)"
)


def load_base_model(
    spec: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> BaseVideoModel:
    """Load the base model named by ``spec`` (see ``BASE_MODEL_HELP``), frozen, in eval mode."""
    if not spec:
        raise UserError(f"no base model given; use one of: {BASE_MODEL_HELP}")
    if spec == "tiny":
        model: BaseVideoModel = build_tiny_t2v()
    elif spec.startswith("videocrafter2:"):
        from .videocrafter2 import load_videocrafter2

        model = load_videocrafter2(spec.removeprefix("videocrafter2:"))
    elif spec.startswith("diffusers:") or ":" not in spec:
        model = DiffusersT2VModel.from_pretrained(
            spec.removeprefix("diffusers:"), torch_dtype=dtype
        )
    else:
        kind = spec.split(":", 1)[0]
        raise UserError(f"unknown base model kind {kind!r}; use one of: {BASE_MODEL_HELP}")
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model
