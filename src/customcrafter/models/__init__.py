"""Base video diffusion models behind one interface, and ``load_base_model`` to pick one."""

from .base import BaseVideoModel, ModelDefaults
from .diffusers_t2v import DiffusersT2VModel, build_tiny_t2v
from .registry import BASE_MODEL_HELP, load_base_model
from .wan import WanModel, build_tiny_wan

__all__ = [
    "BASE_MODEL_HELP",
    "BaseVideoModel",
    "DiffusersT2VModel",
    "ModelDefaults",
    "WanModel",
    "build_tiny_t2v",
    "build_tiny_wan",
    "load_base_model",
]
