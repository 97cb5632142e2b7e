"""The sampling loop: one pipeline for every base model, with the subject module's weight set
before each UNet call by a weight schedule (:class:`DynamicWeightSchedule`)."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import GUIDANCE_OPTIONS, SampleConfig
from ..errors import UserError
from ..models import BaseVideoModel, load_base_model
from ..prompts import find_tokens, has_word, strip_tokens
from ..subject import SpatialSubjectModule, read_metadata
from .dwvs import DynamicWeightSchedule, WeightSchedule

logger = logging.getLogger(__name__)


@dataclass
class VideoOutput:
    """``videos`` ``[b, 3, f, h, w]`` in ``[0, 1]`` (float32, CPU); ``weights`` the subject
    module's weight at each step; ``prompts`` the prompts as the model saw them; ``fps`` the
    frame rate they were made at; ``audio`` ``[b, channels, samples]`` (float32, CPU) at
    ``sample_rate`` for a model that makes sound (LTX-2), else ``None``."""

    videos: torch.Tensor
    weights: list[float]
    prompts: list[str]
    fps: int
    audio: torch.Tensor | None = None
    sample_rate: int | None = None

    def sound(self, index: int) -> dict:
        """``write_video``'s sound arguments for video ``index`` (none without sound)."""
        if self.audio is None:
            return {}
        return {"audio": self.audio[index], "sample_rate": self.sample_rate}


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
        weights_dtype: str | None = None,
        text_encoder_dtype: str | None = None,
        offload_blocks: int = 0,
    ) -> CustomCrafterPipeline:
        """Load a base model (by default the one the subject module was trained on) and the
        subject module file or training folder ``subject``.

        ``base_config``: the original YAML config of a VideoCrafter2 checkpoint.
        ``vae_chunk_size``: frames per VAE call (lower it to save memory).
        ``offload``: ``"model"`` or ``"sequential"`` CPU offload onto ``device`` (see
        ``BaseVideoModel.enable_cpu_offload``) for GPUs too small to hold the model.
        ``weights_dtype`` / ``text_encoder_dtype``: ``"float8"`` keeps the denoisers' (the
        text encoder's) weights in float8 and computes in ``dtype`` (default bfloat16),
        cast on the CPU before they move to ``device``; the LoRA is then folded into each
        layer's weight as it runs (``subject.folding.FoldedAsRun``).
        ``offload_blocks``: the last N blocks of each denoiser stay in CPU memory and are
        streamed to ``device`` as they run (``BaseVideoModel.offload_blocks``); the LoRA is
        then folded as each layer runs.
        """
        if offload and offload_blocks:
            raise UserError("--offload and --offload-blocks exclude each other: choose one")
        if base is None:
            if subject is None:
                raise UserError("give a base model or a subject module")
            base = read_metadata(subject).base_model
        storage = "cpu" if offload else device
        stored = weights_dtype is not None or text_encoder_dtype is not None
        # float8 or offloaded blocks: every cast on the CPU, then what stays on the device moves
        later = stored or offload_blocks
        load_to, load_dtype = (None, None) if later else (storage, dtype)
        model = load_base_model(
            base,
            device=load_to,
            dtype=load_dtype,
            config=base_config,
            vae_chunk_size=vae_chunk_size,
        )
        module = SpatialSubjectModule.load(subject, model, strict=strict) if subject else None
        if module is not None and (load_to is not None or load_dtype is not None):
            model.to(device=load_to, dtype=load_dtype)
        if stored:
            model.store(weights_dtype, text_encoder_dtype, dtype or torch.bfloat16)
        elif later:
            model.to(dtype=dtype)
        if offload_blocks:
            model.offload_blocks(offload_blocks, device or "cuda")
        if later:
            model.to(device=storage)
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
    def _weighting(self, fold: str | None):
        """Yields ``apply(weight)``, called before each UNet call; ``fold``: ``"kept"``
        (folded copies of the weights), ``"as-run"`` (each layer folded as it runs) or
        ``None`` (the LoRA beside each layer)."""
        if self.subject is None:
            if any(hasattr(m, "lora_A") for m in self.model.unet.modules()):
                raise ValueError(
                    "the model carries a subject module's LoRA layers, which would run at "
                    "full weight: keep the module on the pipeline and sample the base model "
                    "with schedule=DynamicWeightSchedule.off()"
                )
            yield lambda weight: None
        elif fold == "kept":
            with self.subject.folded() as folded:
                yield folded.set
        elif fold == "as-run":
            with self.subject.folded_as_run() as folded:
                yield folded.set
        else:
            try:
                yield self.subject.set_scale
            finally:
                self.subject.set_scale(1.0)

    def _fold(self, fold_lora: bool, cond_only: bool) -> str | None:
        """How the LoRA runs: folded copies of the weights where the weights stay put in
        their dtype; folded as each layer runs where they are float8 (a fold stored in
        float8 would lose the LoRA), streamed in or offloaded with the model; beside each
        layer with ``fold_lora=False``, with sequential offload (its hooks move each
        layer's weight as that layer runs) and with the module in the prompt's branch only
        (its weight changes at every call: the probes' setting, kept as it was)."""
        model = self.model
        if not fold_lora or model.offload == "sequential" or cond_only:
            return None
        if model.offload or model.block_offload or model.storage_dtype:
            return "as-run"
        return "kept"

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        schedule: WeightSchedule | None = None,
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
        from the base model (``model.defaults``). ``schedule`` is the subject module's weight
        at each step: by default the paper's Dynamic Weighted Video Sampling (0.4, 0.8,
        k=5) when a subject module is loaded, with keyword arguments named as its settings
        (``k=2``) in place of the paper's; a ``BandSchedule`` too. ``fold_lora`` folds the
        LoRA into the weights (as fast as the plain base model: ``_fold`` says how);
        ``False`` runs unmerged LoRA layers. ``callback(step_index, timestep, weight)`` is
        called before each UNet call.

        ``first_prompt`` (one per prompt) replaces the prompt for the first ``first_steps``
        steps: the commitment probe's switch from prompt A to prompt B.
        """
        model = self.model
        schedule = self._schedule(schedule, settings)
        s = self._settings(config, settings)
        prompts = self._prepare_prompts(_as_list(prompt), warn=not schedule.is_off)
        firsts = self._first_prompts(first_prompt, len(prompts))
        if generator is None:
            generator = torch.Generator().manual_seed(s.seed)
        latents = model.initial_latents(
            len(prompts), s.num_frames, s.height, s.width, s.fps, generator
        )

        # plan the steps: the module's weight and the prompts of each
        sampler = model.make_sampler((s.num_frames, s.height, s.width))
        sampler.set_timesteps(s.num_inference_steps)
        plan = self._plan(schedule, sampler, prompts, firsts, first_steps)
        guidance = _Guidance(model, sampler, s, len(prompts), self._cond_only(schedule))

        latents = latents.to(model.device, model.dtype) * sampler.init_noise_sigma
        with self._weighting(self._fold(fold_lora, guidance.cond_only)) as set_weight:
            for i, t in enumerate(
                tqdm(sampler.timesteps, desc="sampling", disable=not progress, leave=False)
            ):
                if callback is not None:
                    callback(i, int(t), plan.weights[i])
                out = guidance.predict(latents, i, t, plan.prompts[i], plan.weights[i], set_weight)
                latents = sampler.step(out, t, latents, eta=s.eta, generator=generator).prev_sample

        if model.block_offload is not None:  # the VAE gets their room
            model.block_offload.release()
        videos = model.decode_video(latents).float().cpu()
        audio = model.decode_audio(latents) if model.audio else None
        model.release_offloaded()
        videos = ((videos + 1) / 2).clamp(0, 1)
        return VideoOutput(
            videos=videos,
            weights=plan.weights,
            prompts=prompts,
            fps=s.fps,
            audio=None if audio is None else audio.float().cpu(),
            sample_rate=model.audio_sample_rate if audio is not None else None,
        )

    def _schedule(self, schedule: WeightSchedule | None, settings: dict) -> WeightSchedule:
        """``schedule``, or DWVS with the weight settings among ``settings`` (taken out of
        it) in place of the paper's; the base model alone without a subject module."""
        names = {f.name for f in dataclasses.fields(DynamicWeightSchedule)}
        given = {name: settings.pop(name) for name in list(settings) if name in names}
        if given and schedule is not None:
            raise UserError(f"give {', '.join(given)} in the schedule, not beside it")
        if schedule is not None:
            return schedule
        return DynamicWeightSchedule(**given) if self.subject else DynamicWeightSchedule.off()

    def _settings(self, config: SampleConfig | None, settings: dict) -> SampleConfig:
        """``config`` with ``settings`` in place of its fields, checked, the model's defaults
        in place of what stays ``None``."""
        config = dataclasses.replace(config or SampleConfig(), **settings)
        config.validate()
        if config.guidance_scale_2 is not None and len(self.model.experts()) < 2:
            raise UserError(
                "--guidance-scale-2 is the low-noise expert's guidance of a two-expert model "
                f"(Wan 2.2 A14B); {self.model.name!r} has one denoiser: use --guidance-scale"
            )
        given = [
            f.name
            for f in dataclasses.fields(config)
            if f.name in GUIDANCE_OPTIONS and getattr(config, f.name) is not None
        ]
        refused = [name for name in given if name not in self.model.guidance_options]
        if refused:
            flags = ", ".join("--" + name.replace("_", "-") for name in refused)
            raise UserError(f"{flags}: guidance of LTX-2's pipeline; {self.model.name!r} has none")
        return config.with_defaults(self.model.defaults)

    def _first_prompts(self, first_prompt, count: int) -> list[str] | None:
        if first_prompt is None:
            return None
        firsts = _as_list(first_prompt)
        if len(firsts) != count:
            raise UserError(f"give one first prompt per prompt: {len(firsts)} for {count}")
        return self._prepare_prompts(firsts, warn=False)

    def _plan(self, schedule, sampler, prompts, firsts, first_steps: int) -> _StepPlan:
        """The module's weight at each of ``sampler``'s steps, and the prompts there: the
        first prompts for the first ``first_steps`` steps, without the subject's token where
        the schedule holds it back."""
        steps = len(sampler.timesteps)  # some samplers take one step more than asked for
        if not 0 <= first_steps <= steps:
            raise UserError(f"first_steps must be between 0 and the {steps} steps")
        if self.subject is None:
            weights, with_token = [0.0] * steps, [True] * steps
        else:
            schedule.check_steps(steps)
            sigmas = sampler.noise_levels()
            weights = schedule.weights(steps, sigmas)
            with_token = schedule.token_steps(steps, sigmas)
        per_step = []
        for i in range(steps):
            texts = firsts if firsts is not None and i < first_steps else prompts
            per_step.append(texts if with_token[i] else [self.base_prompt(t) for t in texts])
        return _StepPlan(weights, per_step)

    def _cond_only(self, schedule: WeightSchedule) -> bool:
        return self.subject is not None and schedule.cond_only


def _as_list(prompt: str | list[str]) -> list[str]:
    return [prompt] if isinstance(prompt, str) else list(prompt)


@dataclass
class _StepPlan:
    """The module's weight and the prompts (as the model sees them) of each step."""

    weights: list[float]
    prompts: list[list[str]]


class _Guidance:
    """Classifier-free guidance: the scale of each step (two-expert models have one per
    expert), and the UNet calls of one step, batched or as two calls (the model's choice;
    two whenever the module runs in the prompt's branch only); the model combines the
    branches (``BaseVideoModel.guide``: LTX-2 adds its pipeline's terms)."""

    def __init__(self, model, sampler, s: SampleConfig, batch: int, cond_only: bool):
        self.model = model
        self.settings = s
        self.sigmas = sampler.noise_levels()
        self.scales = [
            model.guidance_at(float(t), s.guidance_scale, s.guidance_scale_2)
            for t in sampler.timesteps
        ]
        self.enabled = any(scale != 1.0 for scale in self.scales) or model.guidance_extra(s)
        self.cond_only = self.enabled and cond_only
        self.split = self.enabled and (cond_only or not model.batch_guidance)
        self.fps = s.fps
        self.contexts = _Contexts(model, s.negative_prompt if self.enabled else None, batch)

    def predict(self, latents, i: int, t, texts: list[str], weight: float, set_weight):
        """The guided model output of step ``i`` at timestep ``t``, the module at
        ``weight`` (in the prompt's branch only with ``cond_only``)."""
        model, context = self.model, self.contexts(texts)
        t_batch = _timesteps(t, latents.shape[0], latents.device)
        if self.split:
            negative, positive = context.chunk(2)
            set_weight(0.0 if self.cond_only else weight)
            uncond = model.predict(latents, t_batch, negative, self.fps)
            set_weight(weight)
            cond = model.predict(latents, t_batch, positive, self.fps)
        else:
            set_weight(weight)
            model_in = torch.cat([latents, latents]) if self.enabled else latents
            out = model.predict(
                model_in, _timesteps(t, model_in.shape[0], latents.device), context, self.fps
            )
            if not self.enabled:
                return out
            uncond, cond = out.chunk(2)
            positive = context.chunk(2)[1]

        def again(**options):  # the prompt's branch once more, the module at its weight
            return model.predict(latents, t_batch, positive, self.fps, **options)

        return model.guide(
            latents, self.sigmas[i], uncond, cond, self.scales[i], again, self.settings
        )


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
