"""Evaluation numbers for customized video generation: CLIP-T, CLIP-I, DINO-I, T.Cons and
VBench's dynamic degree; and benchmark specs that compare methods with them."""

from .benchmark import BenchmarkSpec, load_spec, run_benchmark, write_reports
from .metrics import (
    ClipScorer,
    DinoScorer,
    MotionResult,
    VideoMetrics,
    evaluate_video,
    motion_metrics,
)

__all__ = [
    "BenchmarkSpec",
    "ClipScorer",
    "DinoScorer",
    "MotionResult",
    "VideoMetrics",
    "evaluate_video",
    "load_spec",
    "motion_metrics",
    "run_benchmark",
    "write_reports",
]
