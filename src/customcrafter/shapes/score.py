"""The one way a generated shapes-world clip is scored against its prompt.

The demo, the claims benchmark, the benchmark runner and ``evaluate-base`` all read clips
with :func:`score_clip` and tabulate them with :func:`summarise`, so their figures mean the
same thing: the prompt says what the clip should show (in the world's caption grammar),
the detectors read what it does show, and the subject's reference images give the subject
similarity.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation.metrics import Metric
from ..prompts import strip_tokens
from .detect import ClipReading, read_clip, subject_similarity
from .world import BACKGROUNDS, MOTIONS, OBJECT_COLORS

STILL = "standing still"

#: what the benchmark reports of a shapes-world clip (``ShapesScore.metrics``)
METRICS: tuple[Metric, ...] = (
    Metric(
        "subject_similarity",
        "Subject similarity",
        "shapes world: palette-histogram intersection of the object with the references",
    ),
    Metric(
        "motion_accuracy",
        "Motion accuracy",
        "shapes world: share of videos moving as the prompt says",
    ),
    Metric(
        "background_accuracy",
        "Background accuracy",
        "shapes world: share of videos with the prompt's background",
    ),
    Metric("displacement", "Displacement", "shapes world: object centroid px per frame", 2),
)
#: what the detectors read, for reading rows by eye (reported, not summarised)
READINGS = ("shapes_motion_read", "shapes_background_read")


@dataclass(frozen=True)
class Wanted:
    """What a prompt asks of the clip, in the world's terms; ``None`` where it says nothing."""

    color: str | None
    motion: str | None
    background: str | None


def _named(text: str, options: Iterable[str], pattern: str) -> str | None:
    for option in sorted(options, key=len, reverse=True):
        if re.search(pattern.format(re.escape(option)), text):
            return option
    return None


def wanted(prompt: str) -> Wanted:
    """``"a <new1> star moving left on a purple background"`` -> motion ``moving left``,
    background ``purple``, no color (subject tokens are dropped first)."""
    text = strip_tokens(prompt)
    return Wanted(
        color=_named(text, OBJECT_COLORS, r"(^|\s)an? {}\s"),
        motion=_named(text, MOTIONS, r"(^|\s){}($|\s|[.,;])"),
        background=_named(text, BACKGROUNDS, r"(^|\s)on an? {} background"),
    )


@dataclass(frozen=True)
class ShapesScore:
    """One clip read against its prompt. ``subject_similarity`` is ``None`` without
    reference images; a ``*_ok`` is ``None`` where the prompt does not ask."""

    wanted: Wanted
    reading: ClipReading
    subject_similarity: float | None

    def _ok(self, attribute: str) -> bool | None:
        asked = getattr(self.wanted, attribute)
        return None if asked is None else getattr(self.reading, attribute) == asked

    @property
    def motion_ok(self) -> bool | None:
        return self._ok("motion")

    @property
    def background_ok(self) -> bool | None:
        return self._ok("background")

    @property
    def color_ok(self) -> bool | None:
        return self._ok("color")

    @property
    def displacement(self) -> float:
        """Mean centroid step, px/frame (NaN without an object in two consecutive frames)."""
        return float(self.reading.displacement)

    def as_row(self) -> dict:
        """What was asked, read and judged, for a per-video table."""
        row = {}
        for attribute in ("motion", "background", "color"):
            row[attribute] = getattr(self.reading, attribute)
            row[f"{attribute}_wanted"] = getattr(self.wanted, attribute)
            row[f"{attribute}_ok"] = self._ok(attribute)
        row["displacement"] = self.displacement
        row["subject_similarity"] = self.subject_similarity
        return row

    def metrics(self) -> dict:
        """The values of ``METRICS`` and ``READINGS`` (accuracies as 0.0 / 1.0)."""
        motion, background = self.motion_ok, self.background_ok
        return {
            "subject_similarity": self.subject_similarity,
            "displacement": self.displacement,
            "motion_accuracy": None if motion is None else float(motion),
            "background_accuracy": None if background is None else float(background),
            "shapes_motion_read": self.reading.motion,
            "shapes_background_read": self.reading.background,
        }


def score_clip(
    clip: np.ndarray, prompt: str, references: Sequence[np.ndarray] | None = None
) -> ShapesScore:
    """Read ``clip`` (uint8 ``[f, h, w, 3]``) against ``prompt``, and, given the subject's
    reference images (uint8 ``[h, w, 3]``), its palette similarity to them (see
    ``detect.subject_similarity``)."""
    similarity = subject_similarity(clip, references) if references else None
    return ShapesScore(wanted(prompt), read_clip(clip), similarity)


def _mean(values: Iterable) -> float | None:
    numbers = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(numbers)) if numbers else None


def summarise(scores: Sequence[ShapesScore]) -> dict:
    """The figures every shapes report gives, over ``scores``: the share of clips that show
    what their prompt asks (over the clips whose prompt asks it), the mean displacement over
    all clips and over those asked to move or to stand still, the mean subject similarity,
    and the motion accuracy per asked direction. ``None`` where no clip counts."""
    moving = [s for s in scores if s.wanted.motion not in (None, STILL)]
    still = [s for s in scores if s.wanted.motion == STILL]
    return {
        "videos": len(scores),
        "motion_accuracy": _mean(s.motion_ok for s in scores),
        "background_accuracy": _mean(s.background_ok for s in scores),
        "color_accuracy": _mean(s.color_ok for s in scores),
        "displacement": _mean(s.displacement for s in scores),
        "displacement_moving": _mean(s.displacement for s in moving),
        "displacement_still": _mean(s.displacement for s in still),
        "subject_similarity": _mean(s.subject_similarity for s in scores),
        "motion_accuracy_by_direction": {
            m: _mean(s.motion_ok for s in scores if s.wanted.motion == m)
            for m in MOTIONS
            if any(s.wanted.motion == m for s in scores)
        },
    }
