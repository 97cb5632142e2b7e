"""The numbers customized video generation is judged by: CLIP-T, CLIP-I, DINO-I, T.Cons and
VBench's dynamic degree, one function per metric and ``evaluate_video`` for all of them."""

from .metrics import (
    METRICS,
    ClipScorer,
    DinoScorer,
    Metric,
    VideoMetrics,
    evaluate_video,
    preprocess,
)
from .motion import MotionResult, motion_metrics

__all__ = [
    "METRICS",
    "ClipScorer",
    "DinoScorer",
    "Metric",
    "MotionResult",
    "VideoMetrics",
    "evaluate_video",
    "motion_metrics",
    "preprocess",
]
