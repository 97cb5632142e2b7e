"""What the flow-matching bases (Wan, HunyuanVideo 1.5) share: their own diffusers scheduler,
rebuilt from its config, and their training: ``x_t = (1 - sigma) x_0 + sigma * noise`` with
``t = 1000 sigma``, the velocity ``noise - x_0`` as the target, and sigma drawn uniformly
and then shifted by the scheduler's shift (as the sampler's steps are)."""

from __future__ import annotations

import torch

from ..errors import UserError


def scheduler_config(scheduler) -> dict:
    """A scheduler's config with its class name (which ``make_scheduler`` builds)."""
    return {**dict(scheduler.config), "_class_name": type(scheduler).__name__}


class FlowMatchingTraining:
    """The scheduler and the training of a flow-matching base; the class gives
    ``scheduler_config`` (and ``default_scheduler``, the class a config without a name
    means), and may narrow the draw (``_draw_range``: Wan's two experts)."""

    default_scheduler = "FlowMatchEulerDiscreteScheduler"

    def make_scheduler(self):
        """A fresh instance of the model's own scheduler."""
        import diffusers

        name = self.scheduler_config.get("_class_name", self.default_scheduler)
        scheduler_class = getattr(diffusers, name, None)
        if scheduler_class is None:
            raise UserError(f"diffusers has no scheduler {name!r} (from the model's config)")
        return scheduler_class.from_config(self.scheduler_config)

    @property
    def flow_shift(self) -> float:
        """The timestep shift of the model's scheduler (1.0: none)."""
        config = self.scheduler_config
        if config.get("use_flow_sigmas") or "flow_shift" in config:
            return float(config.get("flow_shift", 1.0))
        return float(config.get("shift", 1.0))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def sample_timesteps(self, count: int, generator: torch.Generator | None = None):
        """Training timesteps: sigma uniform in ``_draw_range``, shifted by ``flow_shift``."""
        u = torch.rand(count, generator=generator)
        low, high = self._draw_range(generator)
        if (low, high) != (0.0, 1.0):
            u = low + (high - low) * u
        shift = self.flow_shift
        sigma = shift * u / (1 + (shift - 1) * u)
        return sigma * self.num_train_timesteps

    def _draw_range(self, generator) -> tuple[float, float]:
        """The range of the unshifted uniform draw (the whole of it by default)."""
        return 0.0, 1.0

    def _sigma(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sigma = timesteps.to(device=like.device, dtype=torch.float32) / self.num_train_timesteps
        return sigma.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0, noise, timesteps):
        sigma = self._sigma(timesteps, x0)
        return ((1 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)

    def training_target(self, x0, noise, timesteps):
        return noise - x0
