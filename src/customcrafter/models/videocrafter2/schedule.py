"""VideoCrafter2's noise schedule, with its signal scaling.

VideoCrafter2 (``LatentDiffusion`` with ``use_scale: true``) trains on a forward process
whose clean-signal term is damped by ``scale_arr``::

    x_t = sqrt(abar_t) * s_t * x0 + sqrt(1 - abar_t) * eps

with ``s`` falling linearly from ``scale_a = 1.0`` to ``scale_b = 0.7`` over the first 400
timesteps and staying at 0.7 afterwards (its DDIM sampler, which undoes the scaling, is
``sampler.VC2DDIMSampler``). The numbers here follow the original
code's float32/float64 mix so that schedules match its buffers bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["PARAMETERIZATIONS", "VC2NoiseSchedule"]

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
