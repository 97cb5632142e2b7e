"""The sampling loop: one pipeline for every base model, with the subject module's weight set
before each UNet call by a :class:`DynamicWeightSchedule`."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import SampleConfig
from ..errors import UserError
from ..models import BaseVideoModel, load_base_model
from ..prompts import find_tokens, has_word, strip_tokens
from ..subject import SpatialSubjectModule, read_metadata
from .dwvs import BandSchedule, DynamicWeightSchedule
from .samplers import make_sampler, noise_levels

#: what says the subject module's weight and token at each step
Schedule = DynamicWeightSchedule | BandSchedule

logger = logging.getLogger(__name__)


@dataclass
class VideoOutput:
    """``videos`` ``[b, 3, f, h, w]`` in ``[0, 1]`` (float32, CPU); ``weights`` the subject
    module's weight at each step; ``prompts`` the prompts as the model saw them; ``fps`` the
    frame rate they were made at."""

    videos: torch.Tensor
    weights: list[float]
    prompts: list[str]
    fps: int


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

    def _prepare_prompts(self, prompts: list[str], warn: bool = True) -> list[str]:
        """Prompts as the model sees them; ``warn`` when one leaves out the subject."""
        meta = self.subject.metadata if self.subject else None
        known = set(meta.tokens) if meta else set()
        prepared = []
        for prompt in prompts:
            unknown = [t for t in find_tokens(prompt) if t not in known]
            if unknown and meta is None:
                stripped = strip_tokens(prompt)
                logger.warning("no subject module loaded: sampling %r as %r", prompt, stripped)
                prompt = stripped
            elif unknown:
                named = ", ".join(sorted(known)) or f"its identifier word {meta.identifier!r}"
                raise UserError(
                    f"prompt uses {', '.join(unknown)} but the subject module knows only {named}"
                )
            elif warn and meta and not any(has_word(prompt, w) for w in meta.words):
                logger.warning(
                    "the prompt %r does not use the subject's %s (%s): the video will show "
                    "its class, not the subject",
                    prompt,
                    "identifier" if meta.identifier else "token",
                    ", ".join(meta.words),
                )
            prepared.append(prompt)
        return prepared

    def base_prompt(self, prompt: str) -> str:
        """``prompt`` as the base model alone should see it: without the subject's tokens
        (or its identifier word)."""
        if self.subject is None:
            return strip_tokens(prompt)
        return self.subject.metadata.base_prompt(prompt)

    @contextmanager
    def _weighting(self, fold: bool):
        """Yields ``apply(weight)``, called before each UNet call."""
        if self.subject is None:
            if any(hasattr(m, "lora_A") for m in self.model.unet.modules()):
                raise ValueError(
                    "the model carries a subject module's LoRA layers, which would run at "
                    "full weight: keep the module on the pipeline and sample the base model "
                    "with schedule=DynamicWeightSchedule.off()"
                )
            yield lambda weight: None
        elif fold:
            with self.subject.folded() as folded:
                yield folded.set
        else:
            try:
                yield self.subject.set_scale
            finally:
                self.subject.set_scale(1.0)

    def _plan(self, schedule: Schedule, sampler) -> tuple[list[float], list[bool]]:
        """The module's weight at each of ``sampler``'s steps, and whether the prompt carries
        the subject's token there."""
        steps = len(sampler.timesteps)
        if self.subject is None:
            return [0.0] * steps, [True] * steps
        schedule.check_steps(steps)
        sigmas = noise_levels(sampler)
        return schedule.weights(steps, sigmas), schedule.token_steps(steps, sigmas)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        schedule: Schedule | None = None,
        config: SampleConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        fold_lora: bool = True,
        progress: bool = True,
        callback=None,
        first_prompt: str | list[str] | None = None,
        first_steps: int = 0,
        **settings,
    ) -> VideoOutput:
        """Generate one video per prompt.

        ``config`` holds the sampler settings; keyword arguments named as its fields
        (``num_inference_steps=25, seed=3``) replace them, and what stays ``None`` comes
        from the base model (``model.defaults``). ``schedule`` defaults to the config's
        Dynamic Weighted Video Sampling (the paper's 0.4, 0.8, k=5) when a subject module is
        loaded; it may also be a ``BandSchedule``. ``fold_lora`` folds the LoRA into the
        weights at each change of weight (as fast as the plain base model); ``False`` runs
        unmerged LoRA layers. ``callback(step_index, timestep, weight)`` is called before
        each UNet call.

        ``first_prompt`` (one per prompt) replaces the prompt for the first ``first_steps``
        steps: the commitment probe's switch from prompt A to prompt B.
        """
        model = self.model
        config = dataclasses.replace(config or SampleConfig(), **settings)
        config.validate()
        s = config.with_defaults(model.defaults)
        if schedule is None:
            schedule = (
                DynamicWeightSchedule.from_config(config)
                if self.subject
                else DynamicWeightSchedule.off()
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = self._prepare_prompts(prompts, warn=not schedule.is_off)
        firsts = None
        if first_prompt is not None:
            firsts = [first_prompt] if isinstance(first_prompt, str) else list(first_prompt)
            if len(firsts) != len(prompts):
                raise UserError(
                    f"give one first prompt per prompt: {len(firsts)} for {len(prompts)}"
                )
            firsts = self._prepare_prompts(firsts, warn=False)
        shape = model.latent_shape(len(prompts), s.num_frames, s.height, s.width)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if s.seed is None else s.seed)

        device, dtype = model.device, model.dtype
        b = len(prompts)
        sampler = make_sampler(model)
        sampler.set_timesteps(s.num_inference_steps)
        # some samplers (VideoCrafter2's DDIM) take one step more than asked for
        steps = len(sampler.timesteps)
        if not 0 <= first_steps <= steps:
            raise UserError(f"first_steps must be between 0 and the {steps} steps")
        weights, with_token = self._plan(schedule, sampler)
        if config.guidance_scale_2 is not None and len(model.experts()) < 2:
            raise UserError(
                "--guidance-scale-2 is the low-noise expert's guidance of a two-expert model "
                f"(Wan 2.2 A14B); {model.name!r} has one denoiser: use --guidance-scale"
            )
        scales = [
            model.guidance_at(float(t), s.guidance_scale, s.guidance_scale_2)
            for t in sampler.timesteps
        ]
        use_cfg = any(scale != 1.0 for scale in scales)
        context = _Contexts(model, s.negative_prompt if use_cfg else None, b)

        def texts_at(i: int) -> list[str]:
            texts = firsts if firsts is not None and i < first_steps else prompts
            return texts if with_token[i] else [self.base_prompt(t) for t in texts]

        latents = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
        latents = latents * getattr(sampler, "init_noise_sigma", 1.0)

        # the module in the prompt's branch only: two UNet calls a step, the LoRA unfolded
        cond_only = self.subject is not None and getattr(schedule, "cond_only", False)
        split = use_cfg and (cond_only or not model.batch_guidance)
        fold = fold_lora and not model.offload and not (use_cfg and cond_only)
        with self._weighting(fold) as apply_weight:
            for i, t in enumerate(
                tqdm(sampler.timesteps, desc="sampling", disable=not progress, leave=False)
            ):
                if callback is not None:
                    callback(i, int(t), weights[i])
                if split:
                    t_batch = _timesteps(t, b, device)
                    negative, positive = context(texts_at(i)).chunk(2)
                    apply_weight(0.0 if cond_only else weights[i])
                    uncond = model.predict(latents, t_batch, negative, s.fps)
                    apply_weight(weights[i])
                    cond = model.predict(latents, t_batch, positive, s.fps)
                    out = uncond + scales[i] * (cond - uncond)
                else:
                    apply_weight(weights[i])
                    model_in = torch.cat([latents, latents]) if use_cfg else latents
                    t_batch = _timesteps(t, model_in.shape[0], device)
                    out = model.predict(model_in, t_batch, context(texts_at(i)), s.fps)
                    if use_cfg:
                        uncond, cond = out.chunk(2)
                        out = uncond + scales[i] * (cond - uncond)
                latents = sampler.step(out, t, latents, eta=s.eta, generator=generator).prev_sample

        videos = model.decode_video(latents).float().cpu()
        model.release_offloaded()
        videos = ((videos + 1) / 2).clamp(0, 1)
        return VideoOutput(videos=videos, weights=weights, prompts=prompts, fps=s.fps)


def _timesteps(t: torch.Tensor, count: int, device) -> torch.Tensor:
    """The step's timestep for ``count`` samples, in the sampler's dtype (integer for the
    DDPM-trained models, float for some flow-matching schedulers)."""
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.long()
    return t.to(device).reshape(()).expand(count)


class _Contexts:
    """Text embeddings of prompt lists, each encoded once, with the negative prompt's in
    front for classifier-free guidance (``negative_prompt`` ``None``: no guidance)."""

    def __init__(self, model: BaseVideoModel, negative_prompt: str | None, batch: int):
        self.model = model
        self.negative = (
            None
            if negative_prompt is None
            else model.encode_prompts([negative_prompt] * batch).to(model.dtype)
        )
        self.encoded: dict[tuple[str, ...], torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        key = tuple(texts)
        if key not in self.encoded:
            c = self.model.encode_prompts(texts).to(self.model.dtype)
            self.encoded[key] = c if self.negative is None else torch.cat([self.negative, c])
        return self.encoded[key]
