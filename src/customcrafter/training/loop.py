"""Learning a subject: the training loop, readable top to bottom.

instance photos -> static clips -> noise-prediction loss (masked to the image area) plus
``prior_loss_weight`` times the same loss on class clips -> AdamW on the LoRA and the new
token embeddings only. accelerate handles devices, mixed precision, gradient accumulation and
several processes (``accelerate launch``, DDP): a step averages processes x accumulation
micro-batches, micro-batch ``g`` of step ``s`` drawn from (seed, s, g) whichever process
takes it, so N processes learn what one process with N times the accumulation learns. What
the run learns from is assembled in ``inputs.py``; its output folder is guarded by
``output.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig, config_to_dict
from ..errors import UserError
from ..models import load_base_model
from ..models.base import BaseVideoModel
from ..processes import state as processes
from ..subject import SUBJECT_FILENAME, SpatialSubjectModule
from ..subject.module import for_experts
from . import logs as tracking
from . import sharding
from .cache import CachedBatch
from .checkpoint import check_resume, find_checkpoint, load_checkpoint
from .data import StaticClipBatch
from .inputs import check_inputs, datasets, encode_once, generate_class_data, photos_fingerprint
from .output import OutputFolder, check_output_dir, hold_output_dir
from .validation import Validation

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

    def train(self, mode: bool = True):
        """Training mode for the denoisers; the frozen text encoder stays in evaluation mode
        (UMT5's dropout would change the captions' features and keep its masks for the
        backward pass: 9 GB on Wan 2.1 1.3B with a learnt token)."""
        super().train(mode)
        if hasattr(self, "text_encoder"):
            self.text_encoder.eval()
        return self

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
    tokens, init_words, instance_paths, class_paths = check_inputs(config)
    out = Path(config.output_dir)
    with hold_output_dir(out, enabled=processes().is_main_process):
        replacing = check_output_dir(out, config)
        checkpoint = (
            find_checkpoint(out, config.resume_from_checkpoint)
            if config.resume_from_checkpoint
            else None
        )

        accelerator = _accelerator(config, out / "logs")
        if accelerator.distributed_type == "FSDP":
            raise UserError(
                "launch without accelerate's FSDP plugin (--use_fsdp) and give --fsdp: the "
                "trainer shards the weights itself, block by block, and saves the subject "
                "module whole"
            )
        owned = model is None  # loaded here: nobody needs it on the GPU after training
        if model is None:
            model = load_base_model(
                config.base, config=config.base_config, vae_chunk_size=config.vae_chunk_size
            )
        # float8: cast and stored on the CPU, so that the smaller weights are what moves
        model.store(
            config.weights_dtype, config.text_encoder_dtype, _compute_dtype(config), training=True
        )
        if config.offload_blocks:  # cast first: offloaded weights keep the dtype they go in
            if model.compute_dtype is None and _weight_dtype(config) is not None:
                model.to(dtype=_weight_dtype(config))
            model.offload_blocks(config.offload_blocks, accelerator.device)
        cache = model.cache_training_inputs if config.cache_inputs is None else config.cache_inputs
        sharded = config.fsdp and accelerator.num_processes > 1
        # inputs encoded once and no class images to generate: the encoders work first, the
        # denoisers join the GPU when they have left it (the peak is the larger of the two);
        # sharded, they go as shards (a whole denoiser need not fit one GPU)
        generate = config.prior_loss_weight > 0 and class_paths is None
        later = (cache or sharded) and not generate
        if later:
            model.encoders_to(accelerator.device)
        else:
            model.to(accelerator.device)
        config, height, width = _fitted_to(config, model)
        inputs = {"instance_photos": photos_fingerprint(instance_paths)}
        if checkpoint is not None:  # before anything is written
            check_resume(
                checkpoint,
                config_to_dict(config),
                inputs,
                config.max_train_steps,
                accelerator.num_processes,
            )

        # class images come from the plain base model, before the subject module exists;
        # the missing ones are split across the processes
        if config.prior_loss_weight > 0 and class_paths is None:
            class_paths = generate_class_data(
                config, model, height, width, progress and accelerator.is_main_process
            )

        subject = _create_subject(config, model, init_words)
        factor = model.vae_scale_factor
        data = datasets(config, tokens, instance_paths, class_paths, height, width, factor)
        output = OutputFolder(
            out, replacing, config_to_dict(config), inputs, accelerator.num_processes
        )
        embed_text = cache and not subject.trains_text_encoder
        if cache:
            data = encode_once(config, model, data, embed_text, progress)
        parked = ([model.vae] + ([model.text_encoder] if embed_text else [])) if cache else []
        for component in parked:  # off the GPU while training; back afterwards
            component.to("cpu")
        if later and not sharded:
            model.denoisers_to(accelerator.device)
        run = _Run(config, model, subject, accelerator, output, *data, embedded=embed_text,
                   parked=parked, sharded=sharded)  # fmt: skip
        if config.validation_prompts:
            run.validation = Validation(config, model, subject, output.path, height, width)
        try:
            _fit(run, checkpoint, progress, callback)
        finally:
            for component in parked if not owned else []:  # a model the caller reuses
                component.to(accelerator.device)
        path = out / SUBJECT_FILENAME
        with sharding.whole(run.units):
            _save_subject(run, path)
        accelerator.wait_for_everyone()
        return path


def _save_subject(run, path: Path) -> None:
    """The subject file, written by the main process."""
    if not run.accelerator.is_main_process:
        return
    try:
        run.subject.save(path, training=run.output.settings)
    except OSError as exc:
        raise UserError(
            f"could not write {path}: {exc}; the last checkpoint is intact: free space and "
            "run the same command with --resume-from-checkpoint latest"
        ) from None


def _fitted_to(config: TrainConfig, model: BaseVideoModel) -> tuple[TrainConfig, int, int]:
    """``config`` with the base model's clip length where it gives none (recorded with the
    run), and the training size, checked against the model."""
    if config.train_frames is None:
        config = dataclasses.replace(config, train_frames=model.train_frames)
        config.validate()
    height = config.height or model.defaults.height
    width = config.width or model.defaults.width
    factor = model.vae_scale_factor
    if height % factor or width % factor:
        raise UserError(f"--height and --width must be multiples of {factor}, got {height}x{width}")
    model.latent_shape(1, config.train_frames, height, width)  # the model's own checks
    for_experts(model, [], config.experts)  # --experts only on a two-expert model
    return config, height, width


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
    weight_dtype = _weight_dtype(config)
    if weight_dtype is not None or model.compute_dtype is not None:
        if model.compute_dtype is None:  # (stored in float8: cast already)
            model.to(dtype=weight_dtype)
        for param in subject.parameters():
            param.data = param.data.float()
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return subject


def _weight_dtype(config: TrainConfig) -> torch.dtype | None:
    """The dtype of the frozen weights under the mixed precision (``None``: as loaded)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision)


def _accelerator(config: TrainConfig, logs: Path) -> Accelerator:
    """accelerate for this run, its trackers logging into ``logs``. A process that
    trains again with another mixed precision (the app, a script) gets accelerate's state
    anew; it refuses a second precision."""
    state = AcceleratorState._shared_state
    if state.get("_mixed_precision", config.mixed_precision) != config.mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=tracking.tracker_of(config.report_to),
        project_config=ProjectConfiguration(project_dir=str(logs), logging_dir=str(logs)),
        # the scheduler steps once an optimizer step, whatever the number of processes (so
        # that its state means the same on resume with another number), by the loop itself
        step_scheduler_with_optimizer=False,
        # DDP: set for the model in _prepare (a two-expert model leaves one expert unused)
        kwargs_handlers=[DistributedDataParallelKwargs()],
    )


def _compute_dtype(config: TrainConfig) -> torch.dtype:
    """What weights stored in float8 compute in: the mixed precision's dtype, else bf16."""
    return torch.float16 if config.mixed_precision == "fp16" else torch.bfloat16


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
    lr_scheduler = get_scheduler(  # stepped once an optimizer step (not prepared)
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=config.max_train_steps,
    )
    return optimizer, lr_scheduler


@dataclass
class _Run:
    """What the optimisation loop works on: the settings, the model with its subject module,
    the data (instance and class clips, or their encodings; ``embedded``: the captions too,
    so the text encoder is not needed), the output folder, and, once prepared, the denoiser,
    optimizer and learning-rate schedule."""

    config: TrainConfig
    model: BaseVideoModel
    subject: SpatialSubjectModule
    accelerator: Accelerator
    output: OutputFolder
    instances: object
    classes: object | None
    embedded: bool = False
    denoiser: nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    lr_scheduler: object = None
    step: int = 0
    #: components moved off the GPU for training; samples while training (``--validation-*``)
    parked: list = dataclasses.field(default_factory=list)
    validation: Validation | None = None
    #: --fsdp under several processes: the weights are sharded, in these units
    sharded: bool = False
    units: list = dataclasses.field(default_factory=list)


def _fit(run: _Run, checkpoint: Path | None, progress: bool, callback=None) -> None:
    """The optimisation loop, from ``checkpoint`` (or the start) to ``max_train_steps``,
    writing a checkpoint every ``checkpointing_steps``."""
    config, accelerator = run.config, run.accelerator
    denoiser = SubjectDenoiser(run.model, with_text=not run.embedded)
    denoiser.train()
    if run.sharded:  # the subject's tensors go in whole, the optimizer sees the shards
        if checkpoint is not None:
            run.subject.load_lora_state_dict(load_file(str(checkpoint / SUBJECT_FILENAME)))
        trains_text = run.subject.trains_text_encoder and not run.embedded
        run.units = sharding.shard(run.model, trains_text)
        optimizer, run.lr_scheduler = _optimizer(config, run.subject, accelerator)
        run.denoiser, run.optimizer = denoiser, accelerator.prepare(optimizer)
    else:
        optimizer, run.lr_scheduler = _optimizer(config, run.subject, accelerator)
        run.denoiser, run.optimizer = _prepare(accelerator, denoiser, optimizer)
    if checkpoint is not None:
        run.step = load_checkpoint(
            checkpoint,
            None if run.sharded else run.subject,
            run.optimizer,
            run.lr_scheduler,
            shard=(lambda state: sharding.sharded_state(run.optimizer, state))
            if run.sharded
            else None,
        )
        logger.info("resumed from %s at step %d", checkpoint, run.step)

    hooks = detach_start_token(run.model)
    bar = tqdm(
        total=config.max_train_steps,
        initial=run.step,
        desc="training",
        disable=not (progress and accelerator.is_main_process),
    )
    logs_folder = tracking.start(accelerator, config_to_dict(config))
    try:
        if run.step == 0:
            _validate(run, bar)
        while run.step < config.max_train_steps:
            started = time.perf_counter()
            logs = _train_step(run)
            run.step += 1
            lr = run.lr_scheduler.get_last_lr()[0]
            tracking.log_step(accelerator, run.step, logs, lr, time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            stop = callback is not None and bool(callback(run.step, config.max_train_steps, logs))
            _checkpoint(run, stop)
            _validate(run, bar)
            if stop and run.step < config.max_train_steps:
                raise TrainingInterrupted(
                    f"training stopped at step {run.step} of {config.max_train_steps}; its "
                    "checkpoint is written: resume with --resume-from-checkpoint latest"
                )
    except BaseException as exc:
        if run.output.replacing and not run.output.started:  # the earlier results stay alone
            tracking.discard(accelerator, logs_folder)
        if isinstance(exc, KeyboardInterrupt):
            raise TrainingInterrupted(run.output.interrupted(run.step)) from None
        raise
    finally:
        bar.close()
        for handle in hooks:
            handle.remove()
        tracking.end(accelerator)
    accelerator.wait_for_everyone()


def _prepare(accelerator: Accelerator, denoiser: SubjectDenoiser, optimizer):
    """The denoiser and optimizer as accelerate wraps them. Under DDP the frozen weights
    and buffers are left out of its broadcasts (every process loaded the same ones; a 14B
    model's would be sent at start and its buffers before every forward), and a two-expert
    model reports the expert a micro-batch did not use."""
    if accelerator.num_processes > 1:
        from torch.nn.parallel import DistributedDataParallel

        frozen = [n for n, p in denoiser.named_parameters() if not p.requires_grad]
        frozen += [n for n, _ in denoiser.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(denoiser, frozen)
        accelerator.ddp_handler.find_unused_parameters = len(denoiser._model.experts()) > 1
    return accelerator.prepare(denoiser, optimizer)


def _train_step(run: _Run) -> dict[str, float]:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches on each
    process; the logs averaged over all of them."""
    config, accelerator = run.config, run.accelerator
    accumulation = config.gradient_accumulation_steps
    totals: dict[str, float] = {}
    norm = None
    for micro in range(accumulation):
        # every random draw of micro-batch g of this step derives from (seed, step, g), g
        # counted over all processes: a resumed run replays exactly the batches a straight
        # run would have seen, and N processes draw what one process with N times the
        # accumulation draws (the 0: where the key once held the process, so that runs on
        # one process give what they always gave)
        g = accelerator.process_index * accumulation + micro
        rng = np.random.default_rng([config.seed, 0, run.step, g])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if run.sharded:  # (DDP's no_sync, for the units)
            sharding.gradient_sync(run.units, micro == accumulation - 1)
        with accelerator.accumulate(run.denoiser), _autocast(run):
            loss, logs = compute_loss(
                run.model,
                run.denoiser,
                run.instances.sample(config.train_batch_size, rng),
                run.classes.sample(config.train_batch_size, rng) if run.classes else None,
                generator,
                config,
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                norm = accelerator.clip_grad_norm_(run.subject.parameters(), config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value / accumulation
    if not accelerator.optimizer_step_was_skipped:  # (fp16's scaler skips overflowing steps)
        run.lr_scheduler.step()
    if accelerator.num_processes > 1:
        keys = sorted(totals)
        means = accelerator.reduce(
            torch.tensor([totals[k] for k in keys], device=accelerator.device), "mean"
        )
        totals = dict(zip(keys, means.tolist(), strict=True))
    if norm is not None:
        totals["grad_norm"] = float(norm)
    return totals


def _autocast(run: _Run):
    """The mixed precision's autocast, which accelerate gives a model it wraps (a sharded
    denoiser is not wrapped)."""
    return run.accelerator.autocast() if run.sharded else contextlib.nullcontext()


def _validate(run: _Run, bar) -> None:
    """The validation samples when they are due (main process; the others wait; sharded,
    every process samples, each unit gathered by all, and the main one writes)."""
    if run.validation is None or not run.validation.due(run.step):
        return
    main = run.accelerator.is_main_process
    if main or run.sharded:
        folder = run.validation.sample(run.step, run.parked, write=main)
        if main:
            bar.write(f"samples at step {run.step}: {folder}")
            tracking.log_samples(run.accelerator, run.step, folder)
    run.accelerator.wait_for_everyone()


def _checkpoint(run: _Run, stop: bool) -> None:
    """Write a checkpoint on the main process when one is due (or the run stops here)."""
    config = run.config
    due = run.step % config.checkpointing_steps == 0 or run.step == config.max_train_steps
    if not (stop or due):
        return
    # sharded: gathered whole by every process (no units: as they are), written by the main one
    optimizer = sharding.WholeOptimizer(run.optimizer) if run.sharded else run.optimizer
    with sharding.whole(run.units):
        if run.accelerator.is_main_process:
            run.output.save_checkpoint(
                run.step, run.subject, optimizer, run.lr_scheduler, config.checkpoints_total_limit
            )
