"""The sampling loop: one pipeline for every base model, with the subject module's weight set
before each UNet call by a :class:`DynamicWeightSchedule`."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..models.base import BaseVideoModel
from ..subject import SpatialSubjectModule, find_tokens, strip_tokens
from .schedule import DynamicWeightSchedule

logger = logging.getLogger(__name__)


@dataclass
class VideoOutput:
    """``videos`` ``[b, 3, f, h, w]`` in ``[0, 1]`` (float32, CPU); ``weights`` the subject
    module's weight at each step; ``prompts`` the prompts as the model saw them."""

    videos: torch.Tensor
    weights: list[float]
    prompts: list[str]


class CustomCrafterPipeline:
    """Text-to-video sampling with an optional subject module.

    >>> pipe = CustomCrafterPipeline.from_pretrained("tiny", subject="out/")  # doctest: +SKIP
    >>> out = pipe("a <new1> dog surfing", schedule=DynamicWeightSchedule(0.4, 0.8, 5))  # doctest: +SKIP
    """

    def __init__(self, model: BaseVideoModel, subject: SpatialSubjectModule | None = None):
        self.model = model
        self.subject = subject

    @classmethod
    def from_pretrained(
        cls,
        base: str | None = None,
        subject: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        strict: bool = True,
        base_config: str | Path | None = None,
        vae_chunk_size: int | None = None,
        offload: str | None = None,
    ) -> CustomCrafterPipeline:
        """Load a base model (by default the one the subject module was trained on) and the
        subject module file or training folder ``subject``.

        ``base_config``: the original YAML config of a VideoCrafter2 checkpoint.
        ``vae_chunk_size``: frames per VAE call (lower it to save memory).
        ``offload``: ``"model"`` or ``"sequential"`` CPU offload onto ``device`` (see
        ``BaseVideoModel.enable_cpu_offload``) for GPUs too small to hold the model.
        """
        from ..models import load_base_model
        from ..subject import read_metadata

        if base is None:
            if subject is None:
                raise UserError("give a base model or a subject module")
            base = read_metadata(subject).base_model
        storage = "cpu" if offload else device
        model = load_base_model(
            base, device=storage, dtype=dtype, config=base_config, vae_chunk_size=vae_chunk_size
        )
        module = SpatialSubjectModule.load(subject, model, strict=strict) if subject else None
        if module is not None and (storage is not None or dtype is not None):
            model.to(device=storage, dtype=dtype)
        if offload:
            model.enable_cpu_offload(offload, device or "cuda")
        return cls(model, module)

    def _prepare_prompts(self, prompts: list[str]) -> list[str]:
        known = set(self.subject.metadata.tokens) if self.subject else set()
        prepared = []
        for prompt in prompts:
            unknown = [t for t in find_tokens(prompt) if t not in known]
            if unknown and self.subject is None:
                stripped = strip_tokens(prompt)
                logger.warning("no subject module loaded: sampling %r as %r", prompt, stripped)
                prompt = stripped
            elif unknown:
                raise UserError(
                    f"prompt uses {', '.join(unknown)} but the subject module knows only "
                    f"{', '.join(sorted(known))}"
                )
            prepared.append(prompt)
        return prepared

    @contextmanager
    def _weighting(self, fold: bool):
        """Yields ``apply(weight)``, called before each UNet call."""
        if self.subject is None:
            yield lambda weight: None
        elif fold:
            with self.subject.folded() as folded:
                yield folded.set
        else:
            try:
                yield self.subject.set_scale
            finally:
                self.subject.set_scale(1.0)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        schedule: DynamicWeightSchedule | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: int | None = None,
        negative_prompt: str | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        fold_lora: bool = True,
        progress: bool = True,
        callback=None,
    ) -> VideoOutput:
        """Generate one video per prompt.

        ``schedule`` defaults to the paper's Dynamic Weighted Video Sampling (0.4, 0.8, k=5)
        when a subject module is loaded. Other settings default to the base model's
        (``model.defaults``). ``fold_lora`` folds the LoRA into the weights at each change of
        weight (as fast as the plain base model); ``False`` runs unmerged LoRA layers.
        ``callback(step_index, timestep, weight)`` is called before each UNet call.
        """
        model, d = self.model, self.model.defaults
        prompts = self._prepare_prompts([prompt] if isinstance(prompt, str) else list(prompt))
        schedule = schedule or (
            DynamicWeightSchedule() if self.subject else DynamicWeightSchedule.off()
        )
        steps = num_inference_steps or d.num_inference_steps
        guidance = d.guidance_scale if guidance_scale is None else guidance_scale
        eta = d.eta if eta is None else eta
        frames, fps = num_frames or d.num_frames, fps or d.fps
        height, width = height or d.height, width or d.width
        s = model.vae_scale_factor
        if height % s or width % s:
            raise UserError(
                f"height and width must be multiples of {s} for this model, got {height}x{width}"
            )
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)

        device, dtype = model.device, model.dtype
        b = len(prompts)
        context = model.encode_prompts(prompts).to(dtype)
        use_cfg = guidance != 1.0
        if use_cfg:
            negative = d.negative_prompt if negative_prompt is None else negative_prompt
            context = torch.cat([model.encode_prompts([negative] * b).to(dtype), context])

        sampler = model.make_sampler()
        sampler.set_timesteps(steps)
        channels = model.unet.config.in_channels
        shape = (b, channels, frames, height // s, width // s)
        latents = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
        latents = latents * getattr(sampler, "init_noise_sigma", 1.0)

        # some samplers (VideoCrafter2's DDIM) take one step more than asked for
        steps = len(sampler.timesteps)
        weights = [0.0] * steps if self.subject is None else schedule.weights(steps)
        with self._weighting(fold_lora and not model.offload) as apply_weight:
            for i, t in enumerate(
                tqdm(sampler.timesteps, desc="sampling", disable=not progress, leave=False)
            ):
                apply_weight(weights[i])
                if callback is not None:
                    callback(i, int(t), weights[i])
                model_in = torch.cat([latents, latents]) if use_cfg else latents
                t_batch = torch.full((model_in.shape[0],), int(t), device=device, dtype=torch.long)
                out = model.predict(model_in, t_batch, context, fps)
                if use_cfg:
                    uncond, cond = out.chunk(2)
                    out = uncond + guidance * (cond - uncond)
                latents = sampler.step(out, t, latents, eta=eta, generator=generator).prev_sample

        videos = model.decode_video(latents).float().cpu()
        model.release_offloaded()
        videos = ((videos + 1) / 2).clamp(0, 1)
        return VideoOutput(videos=videos, weights=weights, prompts=prompts)
