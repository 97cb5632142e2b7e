"""Base video diffusion models behind one interface, and ``load_base_model`` to pick one."""

from .base import BaseVideoModel, ModelDefaults
from .diffusers_t2v import DiffusersT2VModel, build_tiny_t2v
from .plugins import Lab, NamedBase, lab_of
from .registry import base_model_help, load_base_model
from .wan import WanModel, build_tiny_wan

__all__ = [
    "BaseVideoModel",
    "DiffusersT2VModel",
    "Lab",
    "ModelDefaults",
    "NamedBase",
    "WanModel",
    "base_model_help",
    "build_tiny_t2v",
    "build_tiny_wan",
    "lab_of",
    "load_base_model",
]
