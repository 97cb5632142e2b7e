"""Dynamic Weighted Video Sampling: the weight of the subject module at each denoising step,
and whether the prompt carries the subject's token at that step.

This file is the one place a weight schedule's settings are declared: each is a field of
:class:`DynamicWeightSchedule` (or :class:`BandSchedule`) with its help text and bounds,
and the command line (``customcrafter generate``), the benchmark spec (``schedule: {dwvs:
...}``) and the app's sliders are made from those fields. A new option is a new field here
and its use in :meth:`DynamicWeightSchedule.weights` or ``token_steps``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config import check_bounds, setting
from ..errors import UserError

#: Dynamic Weighted Video Sampling as the paper runs it: the subject module at LAMBDA_S for
#: the first K of 50 DDIM steps, then at LAMBDA_L
LAMBDA_S = 0.4
LAMBDA_L = 0.8
K = 5
#: the weights a module may run at: off (0) to twice its trained strength
_WEIGHT = {"minimum": 0.0, "maximum": 2.0, "slider_step": 0.05}

#: ``--constant-weight W``: one weight at every step, in place of the dynamic schedule
CONSTANT_WEIGHT_HELP = (
    "one subject-module weight at every step (the paper's baseline), in place of --lambda-s, "
    "--lambda-l and --k"
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class WeightSchedule(Protocol):
    """What the pipeline, the probes and the benchmark need of a weight schedule."""

    #: the module in the prompt's branch of classifier-free guidance only
    cond_only: bool

    @property
    def is_off(self) -> bool:
        """The base model alone: weight 0 and the class word at every step."""

    def check_steps(self, steps: int) -> None:
        """Refuse settings that cannot act within ``steps`` sampling steps."""

    def weights(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[float]:
        """The module's weight at each step (0 is the first step, from pure noise);
        ``sigmas``: the noise level of each step, falling."""

    def token_steps(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[bool]:
        """Whether the prompt carries the subject's token at each step."""

    def describe(self) -> str:
        """A sentence for people: ``dynamic weight 0.4 for 5 steps, then 0.8``."""

    def label(self) -> str:
        """A short label for tables: ``DWVS 0.4/0.8, k=5``."""

    def record(self) -> dict:
        """The settings as recorded with a video (what its cache entry depends on)."""


@dataclass(frozen=True)
class DynamicWeightSchedule:
    """The paper's Algorithm 1, and three variants of it.

    Sampling runs ``T`` steps from pure noise. The subject module contributes ``lambda_s``
    while the denoiser lays out motion and switches to ``lambda_l`` when ``t == T - k``: with
    ``T = 50`` and ``k = 5`` the first 5 steps run at 0.4 and the other 45 at 0.8.

    ``switch_sigma`` switches by noise level instead of by step count: ``lambda_s`` while the
    sampler's noise level ``sigma`` is above it (see ``Sampler.noise_levels``), as ComfyUI
    schedules a LoRA's strength. ``delay_token`` (not in the paper) also holds back the
    learnt token until the switch: before it, the prompt says the class word (``a dog``) in
    place of ``a <new1> dog``, so neither part of the module acts on the early steps.
    ``cond_only`` (not in the paper) runs the module in the prompt's branch of classifier-free
    guidance only, the unconditional branch with the base weights.

    A constant weight is ``DynamicWeightSchedule.constant(w)``; sampling the plain base model
    is ``DynamicWeightSchedule.off()`` (weight 0 at every step, the class word).
    """

    lambda_s: float = setting(
        LAMBDA_S, help="subject-module weight while motion is laid out", **_WEIGHT
    )
    lambda_l: float = setting(
        LAMBDA_L, help="subject-module weight while appearance is repaired", **_WEIGHT
    )
    k: int = setting(
        K,
        help="steps at --lambda-s before switching to --lambda-l",
        minimum=0,
        maximum=1000,
        slider_max=100,
    )
    switch_sigma: float | None = setting(
        None,
        help="switch to --lambda-l when the noise level sigma falls to this, in place of --k "
        "(sigma = sqrt((1 - abar) / abar) for DDPM models, the flow sigma in [0, 1] for Wan; "
        "as ComfyUI reports it)",
        minimum=0.0,
    )
    delay_token: bool = setting(
        False,
        help="not in the paper: the class word in place of the subject's token until the "
        "switch, so neither part of the module acts on the early steps",
    )
    cond_only: bool = setting(
        False,
        help="not in the paper: the module in the prompt's branch of classifier-free guidance "
        "only (two UNet calls a step)",
    )

    def __post_init__(self):
        check_bounds(self, label=lambda f: f.name)

    @classmethod
    def constant(cls, weight: float, cond_only: bool = False) -> DynamicWeightSchedule:
        return cls(lambda_s=weight, lambda_l=weight, k=0, cond_only=cond_only)

    @classmethod
    def off(cls) -> DynamicWeightSchedule:
        return cls.constant(0.0)

    @property
    def is_off(self) -> bool:
        return self.lambda_s == 0.0 and self.lambda_l == 0.0

    @property
    def switches(self) -> bool:
        return self.lambda_s != self.lambda_l or self.delay_token

    def check_steps(self, steps: int) -> None:
        """Refuse a switch that would never come: ``k`` beyond the ``steps`` of sampling."""
        if self.switches and self.switch_sigma is None and self.k > steps:
            raise UserError(
                f"--k {self.k} is more than the {steps} steps, so the subject module would "
                f"never switch to --lambda-l; give a --k below {steps}"
            )

    def switch_step(self, num_steps: int, sigmas: Sequence[float] | None = None) -> int:
        """Index of the first step at ``lambda_l``: ``k``, or with ``switch_sigma`` the first
        step whose noise level is at or below it (``sigmas``: one per step, falling)."""
        if self.switch_sigma is None:
            return min(self.k, num_steps)
        if sigmas is None or len(sigmas) != num_steps:
            raise ValueError("a switch by noise level needs the noise level of every step")
        return next((i for i, s in enumerate(sigmas) if s <= self.switch_sigma), num_steps)

    def weights(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[float]:
        switch = self.switch_step(num_steps, sigmas)
        return [self.lambda_s if i < switch else self.lambda_l for i in range(num_steps)]

    def token_steps(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[bool]:
        if not self.delay_token:
            return [True] * num_steps
        switch = self.switch_step(num_steps, sigmas)
        return [i >= switch for i in range(num_steps)]

    def describe(self) -> str:
        if self.is_off:
            return "no subject module"
        when = (
            f"while sigma > {self.switch_sigma:g}"
            if self.switch_sigma is not None
            else f"for {_plural(self.k, 'step')}"
        )
        branch = ", conditional branch only" if self.cond_only else ""
        if not self.switches or (self.k == 0 and self.switch_sigma is None):
            return f"constant weight {self.lambda_l}{branch}"
        if self.delay_token:
            return (
                f"whole module delayed: class word and weight {self.lambda_s} {when}, "
                f"then the token and weight {self.lambda_l}{branch}"
            )
        return f"dynamic weight {self.lambda_s} {when}, then {self.lambda_l}{branch}"

    def label(self) -> str:
        when = f"sigma={self.switch_sigma:g}" if self.switch_sigma is not None else f"k={self.k}"
        held = ", token held back" if self.delay_token else ""
        branch = ", cond. branch only" if self.cond_only else ""
        return f"DWVS {self.lambda_s:g}/{self.lambda_l:g}, {when}{held}{branch}"

    def record(self) -> dict:
        """``lambda_s``, ``lambda_l``, ``k``, and the other settings where they are not at
        their defaults (so the record of the paper's schedule reads as it always has)."""
        data = {"lambda_s": self.lambda_s, "lambda_l": self.lambda_l, "k": self.k}
        for f in dataclasses.fields(self)[3:]:
            if getattr(self, f.name) != f.default:
                data[f.name] = getattr(self, f.name)
        return data


@dataclass(frozen=True)
class BandSchedule:
    """The whole subject module (its LoRA at ``weight`` and its token) in the steps
    ``[start, stop)`` only, the base model with the class word elsewhere: a probe of which
    steps the module's harm and good come from (``customcrafter probe bands``)."""

    start: int = setting(help="first step of the band", minimum=0)
    stop: int = setting(help="the step after the band", minimum=1)
    weight: float = setting(1.0, help="the module's weight inside the band", **_WEIGHT)

    is_off = False
    cond_only = False

    def __post_init__(self):
        check_bounds(self, label=lambda f: f.name)
        if self.start >= self.stop:
            raise UserError(
                f"a band needs start < stop: start ({self.start}) must be below stop ({self.stop})"
            )

    def check_steps(self, steps: int) -> None:
        if self.stop > steps:
            raise UserError(f"the band [{self.start}, {self.stop}) ends after the {steps} steps")

    def _inside(self, num_steps: int) -> list[bool]:
        return [self.start <= i < self.stop for i in range(num_steps)]

    def weights(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[float]:
        return [self.weight if inside else 0.0 for inside in self._inside(num_steps)]

    def token_steps(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[bool]:
        return self._inside(num_steps)

    def describe(self) -> str:
        return f"module at {self.weight:g} in steps {self.start}-{self.stop - 1} only"

    def label(self) -> str:
        return f"{self.weight:g} in steps {self.start}-{self.stop - 1} only"

    def record(self) -> dict:
        # the layout benchmark records have had since bands were written as DWVS fields
        return {"lambda_s": 0.0, "lambda_l": self.weight, "k": 0, "band": (self.start, self.stop)}
