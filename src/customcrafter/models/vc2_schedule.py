"""VideoCrafter2's noise schedule and DDIM sampler, with its signal scaling.

VideoCrafter2 (``LatentDiffusion`` with ``use_scale: true``) trains on a forward process
whose clean-signal term is damped by ``scale_arr``::

    x_t = sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * eps

with ``s`` falling linearly from ``scale_a = 1.0`` to ``scale_b = 0.7`` over the first 400
timesteps and staying at 0.7 afterwards. Its DDIM sampler undoes ``s_t`` on the predicted
clean latent and applies ``s_prev`` of the step it moves to. The numbers here follow the
original code's float32/float64 mix so that schedules match its buffers bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["PARAMETERIZATIONS", "VC2DDIMSampler", "VC2DDIMStepOutput", "VC2NoiseSchedule"]

#: what the UNet predicts: the noise (VideoCrafter2) or the velocity
#: ``v = sqrt(abar_t) * noise - sqrt(1 - abar_t) * s_t * x0`` (as in LDM's "v")
PARAMETERIZATIONS = ("eps", "v")


class VC2NoiseSchedule:
    """The training-time schedule of a VideoCrafter2 checkpoint.

    Attributes (float32, on the CPU, indexed by the training timestep ``t``):
        betas, alphas_cumprod: ``[T]``, SD's scaled-linear schedule.
        sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: ``[T]``, the noising terms.
        scale_arr: ``[T + scale_mid_step]`` signal scale; the original concatenates the
            400-step ramp with ``T`` constant entries (its ``fix_scale_bug=False``), so only
            the first ``T`` are ever used. All ones when ``use_scale`` is off.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        use_scale: bool = True,
        scale_a: float = 1.0,
        scale_b: float = 0.7,
        scale_mid_step: int = 400,
        fix_scale_bug: bool = False,
        parameterization: str = "eps",
    ):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.num_train_timesteps = int(num_train_timesteps)
        self.parameterization = parameterization
        self.use_scale = bool(use_scale)
        #: the settings, as keyword arguments that rebuild this schedule
        self.config = {
            "num_train_timesteps": self.num_train_timesteps,
            "linear_start": float(linear_start),
            "linear_end": float(linear_end),
            "use_scale": self.use_scale,
            "scale_a": float(scale_a),
            "scale_b": float(scale_b),
            "scale_mid_step": int(scale_mid_step),
            "fix_scale_bug": bool(fix_scale_bug),
            "parameterization": parameterization,
        }
        # "linear" in LDM is linear in sqrt(beta), computed in float64 and stored as float32
        betas64 = (
            torch.linspace(
                linear_start**0.5, linear_end**0.5, self.num_train_timesteps, dtype=torch.float64
            )
            ** 2
        )
        self._betas64 = betas64
        self._alphas_cumprod64 = torch.cumprod(1.0 - betas64, dim=0)
        self.betas = betas64.float()
        self.alphas_cumprod = self._alphas_cumprod64.float()
        self.sqrt_alphas_cumprod = self._alphas_cumprod64.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self._alphas_cumprod64).sqrt().float()
        if self.use_scale:
            tail = (
                self.num_train_timesteps - scale_mid_step
                if fix_scale_bug
                else self.num_train_timesteps
            )
            ramp = torch.linspace(scale_a, scale_b, scale_mid_step, dtype=torch.float64)
            flat = torch.full((tail,), scale_b, dtype=torch.float64)
            self.scale_arr = torch.cat([ramp, flat]).float()
        else:
            self.scale_arr = torch.ones(self.num_train_timesteps)

    @classmethod
    def from_ldm_params(cls, params: Mapping) -> VC2NoiseSchedule:
        """Schedule of an original config's ``model.params`` (``LatentDiffusion`` kwargs)."""
        if params.get("beta_schedule", "linear") != "linear":
            raise ValueError(
                f"only the linear beta schedule is supported, got {params['beta_schedule']!r}"
            )
        if params.get("given_betas") is not None:
            raise ValueError("given_betas is not supported")
        return cls(
            num_train_timesteps=params.get("timesteps", 1000),
            linear_start=params.get("linear_start", 1e-4),
            linear_end=params.get("linear_end", 2e-2),
            use_scale=params.get("use_scale", False),
            scale_a=params.get("scale_a", 1.0),
            scale_b=params.get("scale_b", 0.3),
            scale_mid_step=params.get("mid_step", 400),
            fix_scale_bug=params.get("fix_scale_bug", False),
            parameterization=params.get("parameterization", "eps"),
        )

    def buffers(self) -> dict[str, torch.Tensor]:
        """The schedule buffers a VideoCrafter2 checkpoint stores, under its key names.

        Everything is derived in float64 and rounded to float32 once, as the original does,
        so a checkpoint's buffers can be compared for equality.
        """
        betas = self._betas64
        abar = self._alphas_cumprod64
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        # v_posterior = 0: the posterior variance is beta_tilde
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        out = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
            "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1).sqrt(),
            "posterior_variance": posterior_variance,
            # clipped because the variance is 0 at t = 0
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        }
        out = {k: v.float() for k, v in out.items()}
        if self.use_scale:
            out["scale_arr"] = self.scale_arr.clone()
        return out

    def _coef(self, table: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
        """``table[t]`` shaped to broadcast over ``like`` (``[b, ...]``)."""
        t = timesteps.to("cpu", torch.long)
        shape = (t.shape[0],) + (1,) * (like.ndim - 1)
        return table[t].reshape(shape).to(device=like.device, dtype=like.dtype)

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward diffusion ``sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * noise``.

        ``x0`` and ``noise`` are ``[b, ...]``, ``timesteps`` an integer tensor ``[b]``.
        """
        return (
            self._coef(self.sqrt_alphas_cumprod, timesteps, x0)
            * x0
            * self._coef(self.scale_arr, timesteps, x0)
            + self._coef(self.sqrt_one_minus_alphas_cumprod, timesteps, x0) * noise
        )

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """What the UNet learns to predict: the noise, or the velocity of the scaled signal
        ``s_t * x0`` that ``add_noise`` mixes in."""
        if self.parameterization == "eps":
            return noise
        signal = x0 * self._coef(self.scale_arr, timesteps, x0)
        return (
            self._coef(self.sqrt_alphas_cumprod, timesteps, x0) * noise
            - self._coef(self.sqrt_one_minus_alphas_cumprod, timesteps, x0) * signal
        )

    def make_sampler(self) -> VC2DDIMSampler:
        return VC2DDIMSampler(self)


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
