"""Sampling: the pipeline and the Dynamic Weighted Video Sampling schedule."""

from .pipeline import CustomCrafterPipeline, VideoOutput
from .schedule import DynamicWeightSchedule

__all__ = ["CustomCrafterPipeline", "DynamicWeightSchedule", "VideoOutput"]
