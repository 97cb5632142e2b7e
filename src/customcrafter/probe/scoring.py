"""How a probe reads its clips: a lab model's detectors (``models.plugins.Lab``), or, on any
other base model, measures that need no labels (optical flow, the mean frame)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..evaluation.motion import farneback_flows
from ..models.plugins import require_lab

#: what a scorer may be asked to decide between
MOTION = "motion"
APPEARANCE = ("color", "background", "object")


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z = 1.96``); ``(0, 1)`` for an
    empty sample."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def flow_field(clip: np.ndarray) -> np.ndarray:
    """``[f - 1, h, w, 2]``: the optical flow (Farneback) between consecutive frames of a
    uint8 clip ``[f, h, w, 3]``, in px/frame."""
    return np.stack(list(farneback_flows(clip)))


def mean_flow(clip: np.ndarray) -> np.ndarray:
    """``(u, v)``: the clip's mean optical flow over its pixels and frame pairs, in px/frame:
    where the picture as a whole moves."""
    return flow_field(clip).reshape(-1, 2).mean(axis=0)


def mean_frame(clip: np.ndarray) -> np.ndarray:
    """The clip's mean frame, as floats in [0, 1]: what it shows, wherever it moves."""
    return clip.astype(np.float64).mean(axis=0) / 255.0


def nearer(value: np.ndarray, first: np.ndarray, then: np.ndarray) -> str | None:
    """``"first"`` or ``"then"``: which of two references ``value`` is nearer to; ``None``
    when the references are the same (the attribute did not change the video)."""
    d_first = float(np.linalg.norm(value - first))
    d_then = float(np.linalg.norm(value - then))
    if float(np.linalg.norm(first - then)) < 1e-9 or d_first == d_then:
        return None
    return "first" if d_first < d_then else "then"


class FlowScorer:
    """Label-free: a clip follows prompt A when its mean optical flow (motion) or its mean
    frame (appearance) is nearer to that of the pure-A run of the same noise than to the
    pure-B run's."""

    name = "optical flow and mean frame, against the pure-A and pure-B runs"

    def feature(self, clip: np.ndarray, attribute: str) -> np.ndarray:
        return mean_flow(clip) if attribute == MOTION else mean_frame(clip)

    def verdict(
        self,
        clip: np.ndarray,
        attribute: str,
        first: str,
        then: str,
        pure_first: np.ndarray,
        pure_then: np.ndarray,
    ) -> str | None:
        return nearer(
            self.feature(clip, attribute),
            self.feature(pure_first, attribute),
            self.feature(pure_then, attribute),
        )


def make_scorer(kind: str, lab=None):
    """``"detectors"`` (the lab model's, ``lab.scorer``), ``"flow"``, or ``"auto"``: the
    detectors where the model has a lab, else the flow."""
    if kind == "auto":
        kind = "flow" if lab is None else "detectors"
    if kind == "detectors":
        return require_lab(lab, "--scorer detectors").scorer
    if kind == "flow":
        return FlowScorer()
    raise ValueError(f"unknown scorer {kind!r}; use auto, detectors or flow")


def fraction(flags: Sequence[bool | None]) -> float | None:
    counted = [bool(f) for f in flags if f is not None]
    return sum(counted) / len(counted) if counted else None
