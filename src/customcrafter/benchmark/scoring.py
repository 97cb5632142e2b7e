"""What a benchmark measures, in groups that are computed and cached together:

- ``clip``: CLIP-T, CLIP-I, T.Cons; ``dino``: DINO-I; ``motion``: dynamic degree and flow
  magnitude, all through ``evaluation.evaluate_video``;
- ``shapes``: the shapes-world reading of a clip, through ``shapes.score.score_clip``.

Each group has the settings its values depend on besides the video (a cached value is used
only while they stay the same) and a function that scores one video.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..evaluation import METRICS as VIDEO_METRICS
from ..evaluation import ClipScorer, DinoScorer, evaluate_video
from ..io.images import list_images, load_image
from ..shapes import score as shapes_score

#: every metric a benchmark can report, in report order
METRICS = (*VIDEO_METRICS, *shapes_score.METRICS)
METRIC_KEYS = tuple(m.key for m in METRICS)
METRIC_BY_KEY = {m.key: m for m in METRICS}
#: per-video columns that describe what was read rather than score it
READING_COLUMNS = shapes_score.READINGS
#: bump a group's version when its numbers change, so cached ones are computed again
SHAPES_VERSION = 1


def references_fingerprint(folder: Path) -> str:
    """Names and sizes of a subject's images: scores against them are kept while it holds."""
    digest = hashlib.sha256()
    for path in list_images(folder, "subject image"):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def group_settings(spec, references: str) -> dict[str, dict]:
    """Per group the spec turns on, what its values depend on besides the video."""
    metrics, groups = spec.metrics, {}
    if metrics.clip:
        groups["clip"] = {"model": metrics.clip, "references": references}
    if metrics.dino:
        groups["dino"] = {"model": metrics.dino, "references": references}
    if metrics.motion:
        groups["motion"] = metrics.motion.model_dump()
    if metrics.shapes:
        groups["shapes"] = {"references": references, "version": SHAPES_VERSION}
    return groups


class Scorers:
    """The CLIP and DINO models (loaded on first use) and each subject's reference images."""

    def __init__(self, spec, device: str):
        self.spec, self.device = spec, device
        self._clip: ClipScorer | None = None
        self._dino: DinoScorer | None = None
        self._references: dict[str, list] = {}

    @property
    def clip(self) -> ClipScorer:
        if self._clip is None:
            self._clip = ClipScorer.from_pretrained(self.spec.metrics.clip, device=self.device)
        return self._clip

    @property
    def dino(self) -> DinoScorer:
        if self._dino is None:
            self._dino = DinoScorer.from_pretrained(self.spec.metrics.dino, device=self.device)
        return self._dino

    def references(self, subject) -> list:
        if subject.name not in self._references:
            paths = list_images(subject.images, f"subject {subject.name!r} image")
            self._references[subject.name] = [load_image(p) for p in paths]
        return self._references[subject.name]


def score_group(group: str, frames: np.ndarray, job, subject, scorers: Scorers) -> dict:
    """The values of ``group`` for one video ``frames`` (uint8 ``[f, h, w, 3]``)."""
    if group not in _GROUPS:
        raise ValueError(f"unknown metric group {group!r}")
    return _GROUPS[group](frames, job, subject, scorers)


def _clip(frames, job, subject, scorers: Scorers) -> dict:
    result = evaluate_video(
        frames, job.prompt, scorers.references(subject), clip=scorers.clip, motion=False
    )
    return {"clip_t": result.clip_t, "clip_i": result.clip_i, "t_cons": result.t_cons}


def _dino(frames, job, subject, scorers: Scorers) -> dict:
    result = evaluate_video(
        frames, None, scorers.references(subject), dino=scorers.dino, motion=False
    )
    return {"dino_i": result.dino_i}


def _motion(frames, job, subject, scorers: Scorers) -> dict:
    motion = scorers.spec.metrics.motion
    result = evaluate_video(
        frames,
        None,
        None,
        fps=motion.fps,
        flow=motion.flow,
        base_threshold=motion.base_threshold,
        device=scorers.device,
    )
    dynamic = None if result.dynamic is None else float(result.dynamic)
    return {"dynamic_degree": dynamic, "flow_magnitude": result.flow_magnitude}


def _shapes(frames, job, subject, scorers: Scorers) -> dict:
    references = [np.asarray(image) for image in scorers.references(subject)]
    return shapes_score.score_clip(frames, job.prompt, references).metrics()


#: how each metric group scores one video
_GROUPS = {"clip": _clip, "dino": _dino, "motion": _motion, "shapes": _shapes}
