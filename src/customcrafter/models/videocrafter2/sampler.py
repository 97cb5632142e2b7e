"""VideoCrafter2's own DDIM sampler: DDIM over its noise schedule, with the signal scaling
(``scale_arr``) undone at each step, as the original code samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from .schedule import VC2NoiseSchedule

__all__ = ["VC2DDIMSampler", "VC2DDIMStepOutput"]


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
    ``ddim_scale``, ``ddim_scale_prev``; ``step_noise_std(eta)`` gives the spread of the
    fresh noise each step adds (DDIM's sigma), ``noise_levels()`` each step's noise level.
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

    def step_noise_std(self, eta: float) -> torch.Tensor:
        """The standard deviation of the fresh noise each step adds (DDIM's sigma), float32
        ``[n]`` in ascending timestep order; ``eta = 1`` is DDPM-like, 0 adds none."""
        return (eta * self._sigma_eta1).float()

    def noise_levels(self) -> list[float]:
        """The noise level of each step, in step order (falling): the noise-to-signal ratio
        ``sqrt(1 - abar_t) / (sqrt(abar_t) s_t)``, as ComfyUI reports a step's sigma."""
        timesteps = self.timesteps.cpu().long()
        abar = self.schedule.alphas_cumprod.cpu().double()[timesteps]
        scale = (
            self.schedule.scale_arr.cpu().double()[timesteps]
            if self.use_scale
            else torch.ones_like(abar)
        )
        return ((1 - abar).sqrt() / (abar.sqrt() * scale)).tolist()

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
        sigma = scalar(self.step_noise_std(eta)[i])
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
