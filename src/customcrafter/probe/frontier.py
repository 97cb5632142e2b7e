"""The identity-motion frontier: subject similarity against motion, per sampling method, over
modules of several training strengths, with intervals, settings chosen on one part of the
videos and reported on the other.

:func:`frontier_videos` samples one module's prompts with every method from the same noises
and reads each video (on a lab model with its detectors; elsewhere the optical flow
against the base model's video of the same noise). :func:`summarise` pools the per-video
records into points with 95% intervals, and :func:`choose` picks a method on the choosing
videos by a rule fixed before the report videos are looked at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..benchmark.report import t_interval
from ..errors import UserError
from ..io.video import to_uint8_frames
from ..sampling import CustomCrafterPipeline
from ..sampling.dwvs import WeightSchedule
from .scoring import flow_field, wilson

#: the part of the videos a record belongs to
CHOOSE, REPORT = "choose", "report"


@dataclass(frozen=True)
class Method:
    """A way of sampling: ``paper`` says whether it is the paper's own; ``settings`` are
    sampler settings of this method only (``{"eta": 0.0}``)."""

    name: str
    schedule: WeightSchedule
    paper: bool = False
    settings: dict = field(default_factory=dict)


def frontier_videos(
    pipe: CustomCrafterPipeline,
    prompts: Sequence[str],
    methods: Sequence[Method],
    references: Sequence[np.ndarray] | None = None,
    samples: int = 5,
    choose: int = 1,
    seed: int = 0,
    similarity: Callable[[np.ndarray, Sequence[np.ndarray]], float] | None = None,
    tags: Mapping[str, object] | None = None,
    done: Callable[[str], bool] | None = None,
    progress: bool = True,
    **settings,
) -> Iterable[dict]:
    """Yield one record per video: every prompt (with the subject's token) sampled from
    ``samples`` noises of ``seed`` by every method; the first ``choose`` noises of each
    prompt are the choosing videos, the rest the report videos. Every method gets the same
    noises. ``tags`` are copied into every record (subject, training, ...); ``done(name)``
    skips a method already recorded (resuming). ``flow`` is the length of a video's mean
    optical flow; with the base model (a schedule that is off) first, ``flow_agreement`` is
    its cosine with the base model's video of the same noise. Methods whose schedule is off
    get the prompts without the token."""
    if pipe.subject is None:
        raise UserError("the frontier needs a subject module")
    if not 0 <= choose < samples:
        raise UserError(f"choose {choose} of {samples} noises per prompt: keep some to report")
    lab = pipe.model.lab
    if similarity is None and lab is not None and references:
        similarity = lab.similarity
    texts = [p for p in prompts for _ in range(samples)]
    todo = [m for m in methods if done is None or not done(m.name)]
    if not todo:
        return
    # with the base model first, its videos are what flow agreement compares with (and it
    # runs again when resuming)
    compare = methods[0].schedule.is_off
    runs = [methods[0], *todo] if compare and todo[0] != methods[0] else todo
    base_flows = None
    for method in tqdm(runs, desc="frontier", disable=not progress):
        asked = [pipe.base_prompt(t) for t in texts] if method.schedule.is_off else texts
        given = {**settings, **method.settings}
        out = pipe(asked, schedule=method.schedule, seed=seed, progress=False, **given)
        clips = [to_uint8_frames(v) for v in out.videos]
        flows = [flow_field(c).reshape(-1, 2).mean(axis=0) for c in clips]
        if compare and base_flows is None:
            base_flows = flows
        if method not in todo:
            continue
        for i, (clip, text) in enumerate(zip(clips, texts, strict=True)):
            record = dict(tags or {}, method=method.name, paper=method.paper, prompt=text)
            record["noise"] = i % samples
            record["part"] = CHOOSE if i % samples < choose else REPORT
            if similarity is not None and references:
                record["similarity"] = float(similarity(clip, references))
            record["flow"] = float(np.linalg.norm(flows[i]))
            if base_flows is not None:
                norm = float(np.linalg.norm(flows[i]) * np.linalg.norm(base_flows[i]))
                agreement = None if norm < 1e-9 else float(flows[i] @ base_flows[i]) / norm
                record["flow_agreement"] = agreement
            if lab is not None:
                score = lab.score_clip(clip, text)
                record["motion_ok"] = score.motion_ok
                displacement = score.displacement
                record["displacement"] = displacement if np.isfinite(displacement) else None
            yield record


def _interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and its 95% Student-t interval (no bounds below two values)."""
    try:
        estimate = t_interval(values)
    except ImportError:
        raise UserError('the frontier\'s intervals need scipy: pip install -e ".[bench]"') from None

    def bound(value: float) -> float | None:
        return None if math.isnan(value) else value

    return estimate.mean, bound(estimate.low), bound(estimate.high)


def summarise(records: Iterable[dict], by: Sequence[str]) -> list[dict]:
    """One point per distinct value of the ``by`` fields: the videos, motion ok (share and
    95% Wilson interval), and the means of similarity, displacement and flow agreement with
    95% t intervals."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in by), []).append(record)
    points = []
    for key, mine in groups.items():
        point = dict(zip(by, key, strict=True), videos=len(mine))
        judged = [r["motion_ok"] for r in mine if r.get("motion_ok") is not None]
        if judged:
            point["motion_ok"] = sum(judged) / len(judged)
            point["motion_low"], point["motion_high"] = wilson(sum(judged), len(judged))
        for name in ("similarity", "displacement", "flow", "flow_agreement"):
            values = [r[name] for r in mine if r.get(name) is not None]
            if values:
                point[name], point[f"{name}_low"], point[f"{name}_high"] = _interval(values)
        points.append(point)
    return points


def choose(
    points: Sequence[dict],
    reference: str,
    tolerance: float = 0.03,
    motion: str = "motion_ok",
) -> dict | None:
    """The point with the most ``motion`` among those whose similarity is at least the
    ``reference`` method's less ``tolerance`` (the rule: keep the likeness, win the motion).
    ``points`` are one part's summary by method; ``None`` when the reference is missing."""
    ref = next((p for p in points if p.get("method") == reference), None)
    if ref is None or ref.get("similarity") is None:
        return None
    keep = [
        p
        for p in points
        if p.get("similarity") is not None
        and p.get(motion) is not None
        and p["similarity"] >= ref["similarity"] - tolerance
    ]
    return max(keep, key=lambda p: (p[motion], p["similarity"]), default=None)
