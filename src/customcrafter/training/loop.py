"""Learning a subject: the training loop, readable top to bottom.

instance photos -> static clips -> noise-prediction loss (masked to the image area) plus
``prior_loss_weight`` times the same loss on class clips -> AdamW on the LoRA and the new
token embeddings only. accelerate handles devices, mixed precision, gradient accumulation and
multi-GPU (``accelerate launch``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig, config_to_dict
from ..errors import UserError
from ..io.files import check_writable, write_json
from ..io.images import list_images
from ..io.video import list_videos
from ..models import load_base_model
from ..models.base import BaseVideoModel
from ..prompts import check_identifier, find_tokens, initializer_words, subject_phrase
from ..subject import SUBJECT_FILENAME, SpatialSubjectModule
from ..subject.module import for_experts
from .cache import CachedBatch, EncodedClips
from .checkpoint import (
    CHECKPOINT_DIR,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .class_images import (
    class_image_dir,
    class_video_dir,
    ensure_class_images,
    ensure_class_videos,
)
from .data import CAPTION_TEMPLATES, ClassClips, StaticClipBatch, SubjectImages

logger = logging.getLogger(__name__)


class TrainingInterrupted(UserError):
    """Ctrl-C during training; the message says how to resume."""

    exit_code = 130


class SubjectDenoiser(nn.Module):
    """Text encoder + UNet as one module, so accelerate (and DDP) sees every trainable
    parameter: ``forward(noisy [b,c,f,h,w], t [b], text, fps) -> model output``, ``text``
    the token ids ``[b, L]`` or, with ``with_text=False`` (captions embedded beforehand, the
    text encoder not part of the module), the embeddings ``[b, L, d]``."""

    def __init__(self, model: BaseVideoModel, with_text: bool = True):
        super().__init__()
        self.unet = model.unet
        self.experts = nn.ModuleList(list(model.experts().values())[1:])  # A14B's second
        if with_text:
            self.text_encoder = model.text_encoder
        self._model = model

    def forward(self, noisy, timesteps, text, fps: int):
        context = text if text.is_floating_point() else self._model.encode_text(text)
        return self._model.predict(noisy, timesteps, context.to(noisy.dtype), fps)


def _detach_first_token(module, inputs, output):
    return torch.cat([output[:, :1].detach(), output[:, 1:]], dim=1)


def detach_start_token(model: BaseVideoModel) -> list:
    """As Custom Diffusion and the authors do: no gradient through the cross-attention keys
    and values of the start token. Returns the hook handles."""
    modules = dict(model.unet.named_modules())
    handles = []
    if not model.has_start_token:  # T5's first position is the prompt's first word
        return handles
    for block in model.spatial_blocks():
        for proj in ("to_k", "to_v"):
            handles.append(
                modules[f"{block}.attn2.{proj}"].register_forward_hook(_detach_first_token)
            )
    return handles


def _check_output_dir(out: Path, config: TrainConfig) -> bool:
    """Refuse to touch earlier results in ``out`` unless told to; ``True`` when
    ``--overwrite`` is to replace them. They stay in place until the new run's first
    checkpoint is written (:class:`_Results`), so a run that fails before has lost nothing."""
    check_writable(out, "--output-dir")
    has_results = (out / SUBJECT_FILENAME).exists() or bool(list_checkpoints(out))
    if (out / PREVIOUS).is_dir() and not has_results:  # a run killed while replacing them
        logger.warning("restoring the earlier results kept in %s", out / PREVIOUS)
        _move(out / PREVIOUS, out, _Results.EARLIER)
        shutil.rmtree(out / PREVIOUS, ignore_errors=True)
        has_results = True
    if has_results and not config.resume_from_checkpoint:
        if not config.overwrite:
            raise UserError(
                f"{out} already holds a trained subject or checkpoints; pass "
                "--resume-from-checkpoint latest to continue, or --overwrite to start over"
            )
        return True
    return False


#: where earlier results wait, for the moment the first checkpoint of a new run is written
PREVIOUS = ".previous"


def _move(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Move the ``names`` that exist in ``source`` into ``target``, replacing what is there."""
    target.mkdir(exist_ok=True)
    for name in names:
        if (source / name).exists():
            if (target / name).is_dir():
                shutil.rmtree(target / name)
            else:
                (target / name).unlink(missing_ok=True)
            os.replace(source / name, target / name)


class _Results:
    """What a run writes into its output folder besides checkpoints, and when: the earlier
    results (``--overwrite``) give way just before the first checkpoint, and come back if
    that write fails."""

    EARLIER = (SUBJECT_FILENAME, CHECKPOINT_DIR, "train_config.json")

    def __init__(self, out: Path, replacing: bool, settings: dict):
        self.out, self.replacing, self.settings = out, replacing, settings
        self.started = False

    def save_checkpoint(self, step, subject, optimizer, lr_scheduler, limit) -> None:
        if self.started:
            save_checkpoint(self.out, step, subject, optimizer, lr_scheduler, self.settings, limit)
            return
        aside = self.out / PREVIOUS
        if self.replacing:
            _move(self.out, aside, self.EARLIER)
        try:
            write_json(self.out / "train_config.json", self.settings)
            save_checkpoint(self.out, step, subject, optimizer, lr_scheduler, self.settings, limit)
        except BaseException:
            if self.replacing:
                _move(aside, self.out, self.EARLIER)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        self.started = True

    def interrupted(self, step: int) -> str:
        """What a Ctrl-C at ``step`` leaves, and how to go on."""
        done = list_checkpoints(self.out)
        if done and (self.started or not self.replacing):
            return (
                f"training interrupted at step {step}; the last checkpoint ({done[-1].name}) "
                "is intact. Run the same command with --resume-from-checkpoint latest to "
                "continue."
            )
        kept = "; the earlier results in the folder are unchanged" if self.replacing else ""
        return f"training interrupted at step {step}; no checkpoint was written yet{kept}."


def compute_loss(
    model: BaseVideoModel,
    denoiser: nn.Module,
    instance: StaticClipBatch,
    prior: StaticClipBatch | None,
    generator: torch.Generator,
    config: TrainConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Noise-prediction loss on instance clips (masked to the image area) plus
    ``prior_loss_weight`` times the loss on class clips."""
    batches = [instance] + ([prior] if prior is not None else [])
    masks = torch.cat([b.masks for b in batches])
    device, dtype = model.device, model.dtype
    if isinstance(instance, CachedBatch):  # encoded before the loop: draw from the VAE's
        mean = torch.cat([b.mean for b in batches]).to(device=device, dtype=dtype)
        std = torch.cat([b.std for b in batches]).to(device=device, dtype=dtype)
        latents = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
        text = torch.cat([b.texts for b in batches]).to(device)
    else:
        pixels = torch.cat([b.pixels for b in batches])
        with torch.no_grad():
            latents = model.encode_video(pixels.to(device=device, dtype=dtype), generator=generator)
        text = None
    noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=latents.dtype)
    timesteps = model.sample_timesteps(latents.shape[0], generator).to(device)
    noisy = model.add_noise(latents, noise, timesteps)
    target = model.training_target(latents, noise, timesteps)
    if text is None:
        text = model.tokenize([p for b in batches for p in b.prompts]).to(device)
    pred = denoiser(noisy, timesteps, text, model.defaults.fps)
    diff = pred.float() - target.float()
    err = diff.square() if config.loss == "mse" else diff.abs()
    masks = masks.to(device=device, dtype=err.dtype)
    if masks.shape[2] != err.shape[2]:
        # a VAE that folds frames together (Wan's: 4n+1 -> n+1); the masks of a static
        # clip are the same in every frame, and 1 everywhere for a class clip
        masks = masks[:, :, :1]
    per_sample = (err * masks).sum(dim=(1, 2, 3, 4)) / (
        masks.sum(dim=(1, 2, 3, 4)) * err.shape[1]
    ).clamp(min=1)
    n = len(instance.prompts)
    loss_instance = per_sample[:n].mean()
    logs = {"loss": loss_instance.item()}
    loss = loss_instance
    if prior is not None:
        loss_prior = per_sample[n:].mean()
        loss = loss + config.prior_loss_weight * loss_prior
        logs["prior"] = loss_prior.item()
    return loss, logs


def train(
    config: TrainConfig,
    model: BaseVideoModel | None = None,
    progress: bool = True,
    callback: Callable[[int, int, dict], bool | None] | None = None,
) -> Path:
    """Learn the subject in ``config.instance_data_dir``; returns the subject module file.

    ``model`` may be passed to reuse an already loaded base model (it is modified: the
    subject module is injected into it). ``callback(step, max_train_steps, logs)`` is called
    after each optimizer step (``logs``: the losses); when it returns ``True`` a checkpoint
    is written at that step and ``TrainingInterrupted`` raised (resume with
    ``resume_from_checkpoint="latest"``).
    """
    tokens, init_words, instance_paths, class_paths = _check_inputs(config)
    use_prior = config.prior_loss_weight > 0
    out = Path(config.output_dir)
    replacing = _check_output_dir(out, config)
    checkpoint = (
        find_checkpoint(out, config.resume_from_checkpoint)
        if config.resume_from_checkpoint
        else None
    )

    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    if model is None:
        model = load_base_model(
            config.base, config=config.base_config, vae_chunk_size=config.vae_chunk_size
        )
    model.to(accelerator.device)
    if config.train_frames is None:  # the base model's default, recorded with the run
        config = dataclasses.replace(config, train_frames=model.train_frames)
        config.validate()
    height = config.height or model.defaults.height
    width = config.width or model.defaults.width
    factor = model.vae_scale_factor
    if height % factor or width % factor:
        raise UserError(f"--height and --width must be multiples of {factor}, got {height}x{width}")
    model.latent_shape(1, config.train_frames, height, width)  # the model's own checks
    for_experts(model, [], config.experts)  # --experts only on a two-expert model

    # class images come from the plain base model, before the subject module exists
    if use_prior and class_paths is None:
        with accelerator.main_process_first():
            class_paths = _generate_class_data(
                config, model, height, width, progress and accelerator.is_main_process
            )

    subject = _create_subject(config, model, init_words)
    data = _datasets(config, tokens, instance_paths, class_paths, height, width, factor)
    results = _Results(out, replacing, config_to_dict(config))
    cache = model.cache_training_inputs if config.cache_inputs is None else config.cache_inputs
    embed_text = cache and not subject.trains_text_encoder
    if cache:
        data = _encode_once(config, model, data, embed_text, progress)
    parked = ([model.vae] + ([model.text_encoder] if embed_text else [])) if cache else []
    for component in parked:  # off the GPU while training; back afterwards
        component.to("cpu")
    try:
        _fit(
            config, model, subject, data, accelerator, checkpoint, results, progress, embed_text,
            callback,
        )  # fmt: skip
    finally:
        for component in parked:
            component.to(accelerator.device)
    path = out / SUBJECT_FILENAME
    if accelerator.is_main_process:
        try:
            subject.save(path, training=results.settings)
        except OSError as exc:
            raise UserError(
                f"could not write {path}: {exc}; the last checkpoint is intact: free space and "
                "run the same command with --resume-from-checkpoint latest"
            ) from None
    return path


def _generate_class_data(config, model, height, width, progress) -> list[Path]:
    """The cached class images (or, with ``class_videos``, clips) of the base model."""
    if config.class_videos:
        folder = class_video_dir(model, config.class_prompt, config.train_frames, height, width)
        return ensure_class_videos(
            model,
            config.class_prompt,
            config.num_class_images,
            folder,
            config.train_frames,
            height,
            width,
            num_inference_steps=config.class_sampling_steps,
            progress=progress,
        )
    return ensure_class_images(
        model,
        config.class_prompt,
        config.num_class_images,
        class_image_dir(model, config.class_prompt, height, width),
        height,
        width,
        num_inference_steps=config.class_sampling_steps,
        progress=progress,
    )


def _encode_once(config, model, data, embed_text: bool, progress: bool):
    """``data`` encoded before the loop (``training.cache``), from the run's seed: a resumed
    run encodes the same views."""
    instances, classes = data
    rng = np.random.default_rng([config.seed, 0xCACE])
    views = config.cache_views if config.augment else 1
    encoded = EncodedClips(
        model, instances, views, rng, embed_text, progress, desc="encoding photos"
    )
    if classes is not None:
        class_views = config.cache_views if config.class_videos else 1
        classes = EncodedClips(
            model, classes, class_views, rng, embed_text, progress, desc="encoding class data"
        )
    size = (encoded.nbytes() + (classes.nbytes() if classes is not None else 0)) / 2**20
    logger.info("training inputs encoded once: %.0f MiB in CPU memory", size)
    return encoded, classes


def _create_subject(config: TrainConfig, model: BaseVideoModel, init_words: dict):
    """The subject module, injected into ``model``; with mixed precision the frozen weights
    go to half precision and the trainable ones stay float32."""
    subject = SpatialSubjectModule.create(
        model,
        init_words,
        config.lora_targets,
        config.lora_target_override,
        config.rank,
        seed=config.seed,
        identifier=config.identifier,
        experts=config.experts,
    )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)
    if weight_dtype is not None:
        model.to(dtype=weight_dtype)
        for param in subject.parameters():
            param.data = param.data.float()
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return subject


def _datasets(config, tokens, instance_paths, class_paths, height, width, factor):
    """``(instance clips, class clips or None)``: every photo as a static clip."""
    phrase = subject_phrase(config.instance_prompt, tokens)
    instances = SubjectImages(
        instance_paths,
        height,
        width,
        config.train_frames,
        factor,
        phrase,
        CAPTION_TEMPLATES,
        augment=config.augment,
    )
    if config.prior_loss_weight <= 0:
        return instances, None
    if config.class_videos:
        classes = ClassClips(
            class_paths, height, width, config.train_frames, factor, config.class_prompt
        )
    else:
        classes = SubjectImages(
            class_paths, height, width, config.train_frames, factor, config.class_prompt
        )
    return instances, classes


def _check_inputs(config: TrainConfig):
    """The settings, the subject's new tokens (or identifier word) and its photos (and the
    class images given), checked before anything is loaded: ``(tokens or [identifier],
    initializer words, instance paths, class paths or None)``."""
    config.validate()
    if not config.output_dir:
        raise UserError("give an output folder (--output-dir)")
    if config.identifier is not None:
        check_identifier(config.instance_prompt, config.identifier)
        tokens, init_words = [config.identifier], {}
    else:
        tokens = find_tokens(config.instance_prompt)
        if not tokens:
            raise UserError(
                f"the instance prompt {config.instance_prompt!r} has no new token: write the "
                "subject as a token in angle brackets followed by its class, e.g. 'video of a "
                "<new1> dog' (or name it by an existing word with --identifier sks)"
            )
        init_words = initializer_words(config.instance_prompt, config.initializer_words)
    instance_paths = list_images(config.instance_data_dir, "instance image")
    class_paths = None
    if config.prior_loss_weight > 0 and config.class_data_dir:
        if config.class_videos:
            class_paths = list_videos(config.class_data_dir, "class video")
        else:
            class_paths = list_images(config.class_data_dir, "class image")
    return tokens, init_words, instance_paths, class_paths


def _optimizer(config: TrainConfig, subject: SpatialSubjectModule, accelerator: Accelerator):
    """AdamW on the module's parameters, and the learning-rate schedule."""
    lr = config.learning_rate
    if config.scale_lr:
        lr *= (
            accelerator.num_processes * config.train_batch_size * config.gradient_accumulation_steps
        )
    optimizer = torch.optim.AdamW(
        subject.parameters(),
        lr=lr,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    return optimizer, lr_scheduler


def _fit(
    config,
    model,
    subject,
    data,
    accelerator,
    checkpoint,
    results,
    progress,
    embedded=False,
    callback=None,
) -> None:
    """The optimisation loop, from ``checkpoint`` (or the start) to ``max_train_steps``,
    writing a checkpoint every ``checkpointing_steps``. ``data``: (instance, class) images
    (or their encodings; ``embedded``: captions too, the text encoder not needed)."""
    instances, classes = data
    optimizer, lr_scheduler = _optimizer(config, subject, accelerator)
    denoiser = SubjectDenoiser(model, with_text=not embedded)
    denoiser.train()
    denoiser, optimizer, lr_scheduler = accelerator.prepare(denoiser, optimizer, lr_scheduler)
    step = 0
    if checkpoint is not None:
        step = load_checkpoint(checkpoint, subject, optimizer, lr_scheduler)
        logger.info("resumed from %s at step %d", checkpoint, step)

    hooks = detach_start_token(model)
    bar = tqdm(
        total=config.max_train_steps,
        initial=step,
        desc="training",
        disable=not (progress and accelerator.is_main_process),
    )
    try:
        while step < config.max_train_steps:
            for micro in range(config.gradient_accumulation_steps):
                # every random draw of this micro-batch derives from (seed, process, step): a
                # resumed run replays exactly the batches a straight run would have seen
                rng = np.random.default_rng([config.seed, accelerator.process_index, step, micro])
                generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
                with accelerator.accumulate(denoiser):
                    loss, logs = compute_loss(
                        model,
                        denoiser,
                        instances.sample(config.train_batch_size, rng),
                        classes.sample(config.train_batch_size, rng) if classes else None,
                        generator,
                        config,
                    )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(subject.parameters(), config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            stop = callback is not None and bool(callback(step, config.max_train_steps, logs))
            if accelerator.is_main_process and (
                stop or step % config.checkpointing_steps == 0 or step == config.max_train_steps
            ):
                results.save_checkpoint(
                    step, subject, optimizer, lr_scheduler, config.checkpoints_total_limit
                )
            if stop and step < config.max_train_steps:
                raise TrainingInterrupted(
                    f"training stopped at step {step} of {config.max_train_steps}; its "
                    "checkpoint is written: resume with --resume-from-checkpoint latest"
                )
    except KeyboardInterrupt:
        raise TrainingInterrupted(results.interrupted(step)) from None
    finally:
        bar.close()
        for handle in hooks:
            handle.remove()
    accelerator.wait_for_everyone()
