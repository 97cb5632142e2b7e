"""Dynamic Weighted Video Sampling: the weight of the subject module at each denoising step."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import LAMBDA_L, LAMBDA_S, K, SampleConfig
from ..errors import UserError


@dataclass(frozen=True)
class DynamicWeightSchedule:
    """The paper's Algorithm 1.

    Sampling runs ``T`` steps from pure noise. The subject module contributes ``lambda_s``
    while the denoiser lays out motion and switches to ``lambda_l`` when ``t == T - k``: with
    ``T = 50`` and ``k = 5`` the first 5 steps run at 0.4 and the other 45 at 0.8.

    A constant weight is ``DynamicWeightSchedule.constant(w)``; sampling the plain base model
    is ``DynamicWeightSchedule.off()`` (weight 0 at every step).
    """

    lambda_s: float = LAMBDA_S
    lambda_l: float = LAMBDA_L
    k: int = K

    def __post_init__(self):
        if self.k < 0:
            raise UserError(f"k must be >= 0, got {self.k}")
        for name in ("lambda_s", "lambda_l"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"{name} must be a number, got {getattr(self, name)}")

    @classmethod
    def constant(cls, weight: float) -> DynamicWeightSchedule:
        return cls(lambda_s=weight, lambda_l=weight, k=0)

    @classmethod
    def off(cls) -> DynamicWeightSchedule:
        return cls.constant(0.0)

    @classmethod
    def from_config(cls, config: SampleConfig) -> DynamicWeightSchedule:
        """``config.constant_weight`` at every step when it is set, else the dynamic schedule
        of ``lambda_s``, ``lambda_l`` and ``k``."""
        if config.constant_weight is not None:
            return cls.constant(config.constant_weight)
        return cls(config.lambda_s, config.lambda_l, config.k)

    @property
    def is_off(self) -> bool:
        return self.lambda_s == 0.0 and self.lambda_l == 0.0

    def check_steps(self, steps: int) -> None:
        """Refuse a switch that would never come: ``k`` beyond the ``steps`` of sampling."""
        if self.lambda_s != self.lambda_l and self.k > steps:
            raise UserError(
                f"--k {self.k} is more than the {steps} steps, so the subject module would "
                f"never switch to --lambda-l; give a --k below {steps}"
            )

    def weight(self, step_index: int) -> float:
        """Weight at denoising step ``step_index`` (0 is the first step, from pure noise)."""
        return self.lambda_s if step_index < self.k else self.lambda_l

    def weights(self, num_steps: int) -> list[float]:
        return [self.weight(i) for i in range(num_steps)]

    def describe(self) -> str:
        if self.is_off:
            return "no subject module"
        if self.lambda_s == self.lambda_l or self.k == 0:
            return f"constant weight {self.lambda_l}"
        steps = "step" if self.k == 1 else "steps"
        return f"dynamic weight {self.lambda_s} for {self.k} {steps}, then {self.lambda_l}"
