"""Dynamic Weighted Video Sampling: the weight of the subject module at each denoising step,
and whether the prompt carries the subject's token at that step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import LAMBDA_L, LAMBDA_S, K, SampleConfig
from ..errors import UserError


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class DynamicWeightSchedule:
    """The paper's Algorithm 1, and two variants of it.

    Sampling runs ``T`` steps from pure noise. The subject module contributes ``lambda_s``
    while the denoiser lays out motion and switches to ``lambda_l`` when ``t == T - k``: with
    ``T = 50`` and ``k = 5`` the first 5 steps run at 0.4 and the other 45 at 0.8.

    ``switch_sigma`` switches by noise level instead of by step count: ``lambda_s`` while the
    sampler's noise level ``sigma`` is above it (see ``samplers.noise_levels``), as ComfyUI
    schedules a LoRA's strength. ``delay_token`` (not in the paper) also holds back the
    learnt token until the switch: before it, the prompt says the class word (``a dog``) in
    place of ``a <new1> dog``, so neither part of the module acts on the early steps.
    ``cond_only`` (not in the paper) runs the module in the prompt's branch of classifier-free
    guidance only, the unconditional branch with the base weights.

    A constant weight is ``DynamicWeightSchedule.constant(w)``; sampling the plain base model
    is ``DynamicWeightSchedule.off()`` (weight 0 at every step, the class word).
    """

    lambda_s: float = LAMBDA_S
    lambda_l: float = LAMBDA_L
    k: int = K
    switch_sigma: float | None = None
    delay_token: bool = False
    cond_only: bool = False

    def __post_init__(self):
        if self.k < 0:
            raise UserError(f"k must be >= 0, got {self.k}")
        for name in ("lambda_s", "lambda_l"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"{name} must be a number, got {getattr(self, name)}")
        if self.switch_sigma is not None and not (
            math.isfinite(self.switch_sigma) and self.switch_sigma >= 0
        ):
            raise UserError(f"switch_sigma must be a noise level >= 0, got {self.switch_sigma}")

    @classmethod
    def constant(cls, weight: float, cond_only: bool = False) -> DynamicWeightSchedule:
        return cls(lambda_s=weight, lambda_l=weight, k=0, cond_only=cond_only)

    @classmethod
    def off(cls) -> DynamicWeightSchedule:
        return cls.constant(0.0)

    @classmethod
    def from_config(cls, config: SampleConfig) -> DynamicWeightSchedule:
        """``config.constant_weight`` at every step when it is set, else the dynamic schedule
        of ``lambda_s``, ``lambda_l`` and ``k`` (or ``switch_sigma``)."""
        if config.constant_weight is not None:
            return cls.constant(config.constant_weight, cond_only=config.cond_only)
        return cls(
            config.lambda_s,
            config.lambda_l,
            config.k,
            switch_sigma=config.switch_sigma,
            delay_token=config.delay_token,
            cond_only=config.cond_only,
        )

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
        """The module's weight at each step (0 is the first step, from pure noise)."""
        switch = self.switch_step(num_steps, sigmas)
        return [self.lambda_s if i < switch else self.lambda_l for i in range(num_steps)]

    def token_steps(self, num_steps: int, sigmas: Sequence[float] | None = None) -> list[bool]:
        """Whether the prompt carries the subject's token at each step."""
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


@dataclass(frozen=True)
class BandSchedule:
    """The whole subject module (its LoRA at ``weight`` and its token) in the steps
    ``[start, stop)`` only, the base model with the class word elsewhere: a probe of which
    steps the module's harm and good come from (``customcrafter probe bands``)."""

    start: int
    stop: int
    weight: float = 1.0

    def __post_init__(self):
        if not 0 <= self.start < self.stop:
            raise UserError(f"a band needs 0 <= start < stop, got [{self.start}, {self.stop})")
        if not math.isfinite(self.weight):
            raise UserError(f"weight must be a number, got {self.weight}")

    is_off = False

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
