"""Evaluation numbers for customized video generation: CLIP-T, CLIP-I, DINO-I, T.Cons and
VBench's dynamic degree."""

from .metrics import (
    ClipScorer,
    DinoScorer,
    MotionResult,
    VideoMetrics,
    evaluate_video,
    motion_metrics,
)

__all__ = [
    "ClipScorer",
    "DinoScorer",
    "MotionResult",
    "VideoMetrics",
    "evaluate_video",
    "motion_metrics",
]
