"""The samplers a base model denoises with, behind one small interface.

A sampler has ``set_timesteps(n)``, ``timesteps`` (descending), ``init_noise_sigma``,
``step(model_output, t, sample, eta=..., generator=...)`` returning ``.prev_sample``, and
``noise_levels()``: the noise level of each step, falling (what a switch by noise level,
``--switch-sigma``, compares with). Each base model makes its own
(``BaseVideoModel.make_sampler``): diffusers' DDIM for the DDPM-trained UNets, the model's own
flow-matching scheduler for Wan, VideoCrafter2's DDIM (``videocrafter2/sampler.py``).
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import UserError

__all__ = ["DDIMSampler", "FlowMatchingSampler", "Sampler"]


class Sampler(Protocol):
    init_noise_sigma: float
    timesteps: torch.Tensor

    def set_timesteps(self, num_inference_steps: int, device=None) -> None: ...

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None): ...

    def noise_levels(self) -> list[float]: ...


class DDIMSampler:
    """diffusers' ``DDIMScheduler`` (built from a model's scheduler config) behind the
    sampler interface."""

    def __init__(self, scheduler_config: dict):
        from diffusers import DDIMScheduler

        self.scheduler = DDIMScheduler.from_config(scheduler_config)

    @property
    def init_noise_sigma(self) -> float:
        return self.scheduler.init_noise_sigma

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        self.scheduler.set_timesteps(num_inference_steps, device=device)

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None):
        return self.scheduler.step(model_output, timestep, sample, eta=eta, generator=generator)

    def noise_levels(self) -> list[float]:
        """``sqrt((1 - abar_t) / abar_t)`` of each step, as ComfyUI reports a step's sigma."""
        abar = self.scheduler.alphas_cumprod.cpu().double()[self.timesteps.cpu().long()]
        return ((1 - abar) / abar).sqrt().tolist()


class FlowMatchingSampler:
    """A diffusers flow-matching scheduler (UniPC with flow sigmas, flow-match Euler: the
    model's own) behind the pipeline's sampler interface. These samplers are
    deterministic: ``eta`` other than 0 is refused."""

    init_noise_sigma = 1.0

    def __init__(self, scheduler, sigmas=None, mu: float | None = None):
        """``sigmas(n)``: the noise levels of ``n`` steps where the model's pipeline gives
        the scheduler its own (HunyuanVideo 1.5: ``linspace(1, 0, n + 1)[:-1]``); ``mu``: the
        shift of a scheduler that shifts by the video's size (LTX-2's)."""
        self.scheduler = scheduler
        self.sigmas = sigmas
        self.mu = mu

    @property
    def order(self) -> int:
        return int(getattr(self.scheduler, "order", 1))

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None):
        if self.sigmas is not None:
            sigmas = list(self.sigmas(num_inference_steps))
            shift = {} if self.mu is None else {"mu": self.mu}
            self.scheduler.set_timesteps(sigmas=sigmas, device=device, **shift)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def noise_levels(self) -> list[float]:
        """The flow noise level of each step (``x_t = (1 - s) x_0 + s noise``)."""
        return [float(s) for s in self.scheduler.sigmas[: len(self.timesteps)]]

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None):
        if eta:
            raise UserError(
                f"eta {eta} asks for DDIM's fresh noise; this model's flow-matching sampler "
                f"({type(self.scheduler).__name__}) is deterministic: use --eta 0"
            )
        return self.scheduler.step(model_output, timestep, sample, return_dict=True)
