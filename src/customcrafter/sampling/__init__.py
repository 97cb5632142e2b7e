"""Sampling: the pipeline and the Dynamic Weighted Video Sampling schedule.

The names are imported on first use, so that the weight schedule's settings
(``sampling.dwvs``) can make command-line options without importing torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "BandSchedule": "dwvs",
    "CustomCrafterPipeline": "pipeline",
    "DynamicWeightSchedule": "dwvs",
    "VideoOutput": "pipeline",
    "WeightSchedule": "dwvs",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
