"""CustomCrafter: subject-customized text-to-video generation that keeps the base model's
motion and concept composition (Wu et al., AAAI 2025).

The public API:

- :class:`CustomCrafterPipeline` - sampling, one ``__call__``.
- :class:`DynamicWeightSchedule` - the subject module's weight at each denoising step.
- :class:`SpatialSubjectModule` - LoRA on the spatial attention plus the new tokens.
- :func:`train` with :class:`TrainConfig` - learning a subject from photos.
- :class:`SampleConfig` - the sampler settings of one generated video.
- :func:`load_base_model` - the base video diffusion models.

The names are imported on first use, so that ``import customcrafter`` (and the command
line's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {
    "CustomCrafterPipeline": "sampling",
    "DynamicWeightSchedule": "sampling",
    "VideoOutput": "sampling",
    "SampleConfig": "config",
    "TrainConfig": "config",
    "UserError": "errors",
    "SpatialSubjectModule": "subject",
    "load_base_model": "models",
    "train": "training",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
