"""When does the denoiser decide each attribute of a video?

For prompt pairs that differ in one attribute (A: "moving left", B: "moving right"), denoise
the same noise with A for the first ``j`` steps and B for the rest, for every ``j`` of a
grid, and count how often the result follows A. At ``j = 0`` it is B's video, at ``j = N``
A's; the ``j`` where the share following A crosses one half is when the attribute is
decided. A model with the property Dynamic Weighted Video Sampling builds on decides motion
early (a curve that rises within the first steps) and appearance later; the step by which
motion is decided is the ``k`` to sample with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..errors import UserError
from ..io.video import to_uint8_frames
from ..models.plugins import PromptPair
from ..processes import spread
from ..processes import state as processes
from ..sampling import CustomCrafterPipeline
from .scoring import MOTION, make_scorer, wilson


def generic_pairs() -> list[PromptPair]:
    """Pairs for a general text-to-video model: opposite motions and, as the contrast,
    colors."""
    motion = [
        ("a dog running to the left on a beach", "a dog running to the right on a beach"),
        ("a car driving to the right on a road", "a car driving to the left on a road"),
        ("a balloon rising up into the sky", "a balloon falling down from the sky"),
        ("a boat sailing to the left on a lake", "a boat sailing to the right on a lake"),
    ]
    color = [
        ("a red car driving on a road", "a blue car driving on a road"),
        ("a white dog running on a beach", "a black dog running on a beach"),
        ("a yellow balloon rising into the sky", "a green balloon rising into the sky"),
        ("a red boat sailing on a lake", "a white boat sailing on a lake"),
    ]
    return [PromptPair(MOTION, a, b) for a, b in motion] + [
        PromptPair("color", a, b) for a, b in color
    ]


@dataclass
class CurvePoint:
    """At ``switch_step`` ``j``: clips that followed the first prompt, the second, neither;
    ``share`` = first / (first + second) with its 95% Wilson interval."""

    switch_step: int
    first: int
    then: int
    neither: int
    share: float | None
    low: float
    high: float


@dataclass
class Commitment:
    """The result of :func:`commitment`; ``decided[attribute]`` is the (interpolated) step at
    which the share following A crosses one half, ``None`` if it never does."""

    base: str
    steps: int
    samples: int
    seed: int
    scorer: str
    pairs: list[PromptPair]
    sigmas: list[float]
    curves: dict[str, list[CurvePoint]] = field(default_factory=dict)
    decided: dict[str, float | None] = field(default_factory=dict)
    #: the sampler settings given beyond the base model's defaults (eta, guidance_scale)
    settings: dict = field(default_factory=dict)

    @property
    def suggested_k(self) -> int | None:
        """The step by which motion is decided, rounded up: the ``k`` to sample with."""
        step = self.decided.get(MOTION)
        return None if step is None else int(math.ceil(step))

    @property
    def suggested_switch_sigma(self) -> float | None:
        """The noise level at ``suggested_k``: the same switch as ``--switch-sigma``."""
        k = self.suggested_k
        return None if k is None or k >= len(self.sigmas) else self.sigmas[k]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["suggested_k"] = self.suggested_k
        data["suggested_switch_sigma"] = self.suggested_switch_sigma
        return data

    def summary(self) -> str:
        given = "".join(f", {name} {value:g}" for name, value in self.settings.items())
        lines = [
            f"{self.base}: {self.steps} steps{given}, {self.samples} noises per pair, {self.scorer}"
        ]
        for attribute, step in self.decided.items():
            when = "never crosses one half" if step is None else f"decided by step {step:.1f}"
            lines.append(f"  {attribute}: {when}")
        k = self.suggested_k
        if k is not None:
            sigma = self.suggested_switch_sigma
            noise = "" if sigma is None else f" (--switch-sigma {sigma:.3g})"
            lines.append(f"  suggested --k {k}{noise}")
        return "\n".join(lines)


def crossing(points: Sequence[CurvePoint], level: float = 0.5) -> float | None:
    """The first switch step where the share reaches ``level``, interpolated linearly
    between the grid points around it; ``None`` if it never does."""
    known = [p for p in points if p.share is not None]
    if not known:
        return None
    if known[0].share >= level:
        return float(known[0].switch_step)
    for before, after in zip(known, known[1:], strict=False):
        if after.share >= level:
            fraction = (level - before.share) / (after.share - before.share)
            return before.switch_step + fraction * (after.switch_step - before.switch_step)
    return None


def sampler_steps(
    pipe: CustomCrafterPipeline, num_inference_steps: int | None, settings: dict | None = None
) -> list[float]:
    """The noise level of each step the pipeline will take (at the size ``settings`` give,
    else the model's: LTX-2's levels depend on it)."""
    d, settings = pipe.model.defaults, settings or {}
    size = tuple(
        settings.get(name) or getattr(d, name) for name in ("num_frames", "height", "width")
    )
    sampler = pipe.model.make_sampler(size)
    sampler.set_timesteps(num_inference_steps or pipe.model.defaults.num_inference_steps)
    return sampler.noise_levels()


def default_grid(steps: int) -> list[int]:
    """Every step over the first fifth (where motion is expected to be decided), then every
    tenth of the steps: 0..10, 15, 20, ..., 50 for 50 steps."""
    early = range(0, steps // 5 + 1)
    late = range(steps // 5, steps + 1, max(1, steps // 10))
    return sorted({*early, *late, steps})


def commitment(
    pipe: CustomCrafterPipeline,
    pairs: Sequence[PromptPair] | None = None,
    switch_steps: Sequence[int] | None = None,
    samples: int = 8,
    seed: int = 0,
    scorer: str = "auto",
    num_inference_steps: int | None = None,
    progress: bool = True,
    **settings,
) -> Commitment:
    """Run the commitment probe on ``pipe``'s base model (no subject module).

    Every pair is sampled from ``samples`` noises drawn from ``seed``, the same noises at
    every switch step; by default the model's lab's pairs (``models.plugins.Lab``), else
    :func:`generic_pairs`. ``switch_steps``: the ``j`` to try (always with 0 and ``N``;
    default :func:`default_grid`). ``scorer``: ``"detectors"`` (a lab model's), ``"flow"``
    (label-free) or ``"auto"`` (the lab's detectors where there are any). ``settings`` go to the pipeline (``guidance_scale=...``).
    """
    if pipe.subject is not None:
        raise UserError("the commitment probe measures a base model: load it without a subject")
    if samples < 1:
        raise UserError(f"samples must be at least 1, got {samples}")
    base, lab = pipe.model.name, pipe.model.lab
    if pairs is None:
        pairs = lab.prompt_pairs() if lab is not None else generic_pairs()
    pairs = list(pairs)
    if not pairs:
        raise UserError("the commitment probe needs at least one prompt pair")
    read = make_scorer(scorer, lab)
    sigmas = sampler_steps(pipe, num_inference_steps, settings)
    steps = len(sigmas)
    grid = sorted({0, steps, *(switch_steps if switch_steps is not None else default_grid(steps))})
    if grid[0] < 0 or grid[-1] > steps:
        raise UserError(f"switch steps must be between 0 and {steps}, got {grid}")
    # one entry per video: its pair, each repeated for its noises
    videos = [p for p in pairs for _ in range(samples)]
    firsts = [p.first for p in videos]
    thens = [p.then for p in videos]

    def run(j: int) -> list[np.ndarray]:
        out = pipe(
            thens,
            first_prompt=firsts,
            first_steps=j,
            seed=seed,
            num_inference_steps=num_inference_steps,
            progress=False,
            **settings,
        )
        return [to_uint8_frames(v) for v in out.videos]

    # under several processes each takes a share of the switch steps and makes the two pure
    # runs its verdicts compare with itself; the batches, and so the verdicts, are the ones
    # a single process makes
    pure: dict[int, list[np.ndarray]] = {}
    group = processes()  # (the main process's bar counts its own runs)
    alone = group.num_processes == 1
    bar = tqdm(total=len(grid) if alone else None, desc="commitment probe",
               disable=not (progress and group.is_main_process))  # fmt: skip

    def judge(j: int) -> list[str | None]:
        for end in (0, steps):
            if end not in pure:
                pure[end] = run(end)
                bar.update()
        clips = pure[j] if j in pure else run(j)
        if j not in (0, steps):
            bar.update()
        return [
            read.verdict(clip, pair.attribute, pair.first, pair.then, pure[steps][c], pure[0][c])
            for c, (clip, pair) in enumerate(zip(clips, videos, strict=True))
        ]

    verdicts = dict(zip(grid, spread(grid, judge), strict=True))
    bar.close()

    result = Commitment(base, steps, samples, seed, read.name, pairs, sigmas, settings=settings)
    attributes = list(dict.fromkeys(p.attribute for p in pairs))
    for attribute in attributes:
        points = []
        for j in grid:
            mine = [v for v, p in zip(verdicts[j], videos, strict=True) if p.attribute == attribute]
            first, then = mine.count("first"), mine.count("then")
            counted = first + then
            low, high = wilson(first, counted)
            share = first / counted if counted else None
            points.append(CurvePoint(j, first, then, len(mine) - counted, share, low, high))
        result.curves[attribute] = points
        result.decided[attribute] = crossing(points)
    return result
