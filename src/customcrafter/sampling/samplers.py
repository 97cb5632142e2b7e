"""Samplers the pipeline steps with: VideoCrafter2's own DDIM (with its signal scaling) and
diffusers' schedulers for the diffusers models; :func:`make_sampler` picks the one a base
model was trained for."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from ..errors import UserError
from ..models.base import BaseVideoModel
from ..models.videocrafter2.schedule import VC2NoiseSchedule

__all__ = [
    "FlowMatchingSampler",
    "VC2DDIMSampler",
    "VC2DDIMStepOutput",
    "make_sampler",
    "noise_levels",
]


def make_sampler(model: BaseVideoModel):
    """A fresh sampler with ``set_timesteps(n)``, ``.timesteps`` (descending) and
    ``step(model_output, t, sample, eta=..., generator=...)`` returning ``.prev_sample``:
    VideoCrafter2's DDIM for a model with a ``VC2NoiseSchedule``, otherwise diffusers'
    ``DDIMScheduler`` from the model's scheduler config."""
    if isinstance(model.noise_schedule, VC2NoiseSchedule):
        return VC2DDIMSampler(model.noise_schedule)
    if model.flow_matching:
        return FlowMatchingSampler(model.make_scheduler())
    return DDIMScheduler.from_config(model.scheduler_config)


class FlowMatchingSampler:
    """A diffusers flow-matching scheduler (UniPC with flow sigmas, flow-match Euler: the
    model's own) behind the pipeline's sampler interface. These samplers are
    deterministic: ``eta`` other than 0 is refused."""

    init_noise_sigma = 1.0

    def __init__(self, scheduler):
        self.scheduler = scheduler

    @property
    def order(self) -> int:
        return int(getattr(self.scheduler, "order", 1))

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None):
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        """The flow noise level of each step (``x_t = (1 - s) x_0 + s noise``), then 0."""
        return self.scheduler.sigmas

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None):
        if eta:
            raise UserError(
                f"eta {eta} asks for DDIM's fresh noise; this model's flow-matching sampler "
                f"({type(self.scheduler).__name__}) is deterministic: use --eta 0"
            )
        return self.scheduler.step(model_output, timestep, sample, return_dict=True)


@dataclass
class VC2DDIMStepOutput:
    """``prev_sample``: ``x_{t_prev}``; ``pred_original_sample``: the clean latent estimate,
    already divided by ``s_t`` (both shaped like the sample)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class VC2DDIMSampler:
    """DDIM over a ``VC2NoiseSchedule``, as VideoCrafter2's own sampler runs it.

    Same small interface as a diffusers scheduler: ``set_timesteps(n)``, ``timesteps``
    (descending), ``init_noise_sigma``, ``scale_model_input`` and ``step(...)``. It differs
    from diffusers' ``DDIMScheduler`` in three ways: the signal scaling, the last step moves
    to ``abar_0`` rather than 1 (``set_alpha_to_one=False``) and ``n`` that does not divide
    ``T`` gives the original's spacing ``T // n`` (so possibly more than ``n`` steps).

    After ``set_timesteps`` the per-step tables are float32 ``[n]`` in *ascending* timestep
    order, like the original's: ``ddim_timesteps``, ``ddim_alphas``, ``ddim_alphas_prev``,
    ``ddim_scale``, ``ddim_scale_prev``; ``sigmas(eta)`` gives the noise levels.
    """

    init_noise_sigma = 1.0
    order = 1

    def __init__(self, schedule: VC2NoiseSchedule | None = None, use_scale: bool | None = None):
        self.schedule = schedule if schedule is not None else VC2NoiseSchedule()
        # the CustomCrafter fork hard-codes its sampler's scaling off; allow reproducing that
        self.use_scale = self.schedule.use_scale if use_scale is None else bool(use_scale)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.long)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None):
        """Uniform spacing ``c = T // n``: timesteps ``1, 1 + c, 1 + 2c, ...`` below ``T``."""
        total = self.schedule.num_train_timesteps
        if not 1 <= num_inference_steps <= total:
            raise ValueError(
                f"num_inference_steps must be in [1, {total}], got {num_inference_steps}"
            )
        stride = total // num_inference_steps
        ascending = torch.arange(0, total, stride, dtype=torch.long) + 1
        # the original indexes past the table when stride does not divide T evenly (n = 3
        # gives 1000); dropping that step keeps every schedule it can build unchanged
        ascending = ascending[ascending < total]
        abar = self.schedule.alphas_cumprod
        # the final step (from t = 1) moves to abar[0] and s[0], not to the clean signal
        prev_index = torch.cat([ascending.new_zeros(1), ascending[:-1]])
        self.ddim_timesteps = ascending
        self.ddim_alphas = abar[ascending]
        self.ddim_alphas_prev = abar[prev_index]
        self.ddim_scale = self.schedule.scale_arr[ascending]
        self.ddim_scale_prev = self.schedule.scale_arr[prev_index]
        a = self.ddim_alphas
        a_prev = self.ddim_alphas_prev.double()
        # The original evaluates (1 - a_prev) / (1 - a) with a float32 reciprocal of
        # (1 - a) promoted to float64; doing the same keeps the sigmas bit-exact.
        recip = (1.0 / (1.0 - a)).double()
        self._sigma_eta1 = ((1.0 - a_prev) * recip * (1.0 - a.double() / a_prev)).sqrt()
        self._index = {int(t): i for i, t in enumerate(ascending)}
        self.num_inference_steps = len(ascending)
        self.timesteps = ascending.flip(0).to(device) if device is not None else ascending.flip(0)

    def sigmas(self, eta: float) -> torch.Tensor:
        """Noise level of each step, float32 ``[n]`` ascending; ``eta = 1`` is DDPM-like."""
        return (eta * self._sigma_eta1).float()

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> VC2DDIMStepOutput:
        """One DDIM update from ``sample`` ``x_t`` with the UNet's ``model_output`` (both
        ``[b, c, f, h, w]`` or any shape), to the previous timestep of the schedule.

        A v-prediction is first turned into ``eps = sqrt(a_t) v + sqrt(1 - a_t) x_t``. Then
        ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) / s_t`` and
        ``x_prev = sqrt(a_prev) s_prev x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z``.
        Computed in float32 like the original; returned in ``sample``'s dtype.
        """
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps before step")
        t = int(timestep)
        if t not in self._index:
            raise ValueError(f"timestep {t} is not in the schedule {self.timesteps.tolist()}")
        i = self._index[t]
        device = sample.device

        def scalar(value: torch.Tensor) -> torch.Tensor:
            return value.to(device=device, dtype=torch.float32)

        a_t = scalar(self.ddim_alphas[i])
        a_prev = scalar(self.ddim_alphas_prev[i])
        sigma = scalar(self.sigmas(eta)[i])
        sqrt_one_minus_a_t = (1.0 - a_t).sqrt()
        x = sample.float()
        eps = model_output.float()
        if self.schedule.parameterization == "v":
            eps = a_t.sqrt() * eps + sqrt_one_minus_a_t * x

        pred_x0 = (x - sqrt_one_minus_a_t * eps) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma**2).sqrt() * eps
        if self.use_scale:
            # the UNet sees s_t * x0; report and carry the unscaled x0, rescaled for t_prev
            pred_x0 = pred_x0 / scalar(self.ddim_scale[i])
            prev = a_prev.sqrt() * scalar(self.ddim_scale_prev[i]) * pred_x0 + dir_xt
        else:
            prev = a_prev.sqrt() * pred_x0 + dir_xt
        if eta > 0:
            noise = randn_tensor(x.shape, generator=generator, device=device, dtype=x.dtype)
            prev = prev + sigma * noise
        return VC2DDIMStepOutput(prev.to(sample.dtype), pred_x0.to(sample.dtype))


def noise_levels(sampler) -> list[float]:
    """The noise level ``sigma`` of each of ``sampler``'s steps, in step order (falling): the
    noise-to-signal ratio ``sqrt(1 - abar_t) / (sqrt(abar_t) s_t)`` of a DDPM-trained model
    (``s_t`` is VideoCrafter2's signal scaling, 1 elsewhere), as ComfyUI reports a step's
    sigma; a flow-matching scheduler's own ``sigmas``."""
    if isinstance(sampler, FlowMatchingSampler):
        return [float(s) for s in sampler.sigmas[: len(sampler.timesteps)]]
    timesteps = sampler.timesteps.cpu().long()
    if isinstance(sampler, VC2DDIMSampler):
        abar = sampler.schedule.alphas_cumprod.cpu().double()[timesteps]
        scale = (
            sampler.schedule.scale_arr.cpu().double()[timesteps]
            if sampler.use_scale
            else torch.ones_like(abar)
        )
        return ((1 - abar).sqrt() / (abar.sqrt() * scale)).tolist()
    if getattr(sampler, "alphas_cumprod", None) is not None:
        abar = sampler.alphas_cumprod.cpu().double()[timesteps]
        return ((1 - abar) / abar).sqrt().tolist()
    if getattr(sampler, "sigmas", None) is not None:
        return [float(s) for s in sampler.sigmas[: len(timesteps)]]
    raise ValueError(f"cannot tell the noise levels of {type(sampler).__name__}")
