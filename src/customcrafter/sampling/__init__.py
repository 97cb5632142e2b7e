"""Sampling: the pipeline, the Dynamic Weighted Video Sampling schedule, the samplers."""

from .dwvs import DynamicWeightSchedule
from .pipeline import CustomCrafterPipeline, VideoOutput

__all__ = ["CustomCrafterPipeline", "DynamicWeightSchedule", "VideoOutput"]
