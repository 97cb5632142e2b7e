"""Samples while training (``--validation-prompt``): watch the subject appear and see
whether the motion survives.

Before the first step the base model samples each prompt with the class word in place of the
subject (what the run starts from); every ``--validation-steps`` and at the end the model
samples them with the subject module as it stands, under DWVS (the paper's settings, ``k``
scaled to the sample's steps). The same seed for a prompt every time. Each round writes
``samples/step-NNNNNN/`` in the output folder: one mp4 per prompt and ``contact_sheet.png``,
each file atomically.

Sampling runs on the main process, the LoRA unfolded (its weights change between rounds),
inside ``torch.random.fork_rng``: the training's random draws are those of a run without
validation, and so is its subject file.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import torch

from ..config import TrainConfig
from ..io.contact_sheet import write_contact_sheet
from ..io.files import slug
from ..io.video import to_uint8_frames, write_video
from ..sampling import CustomCrafterPipeline, DynamicWeightSchedule
from ..sampling.dwvs import LAMBDA_L, LAMBDA_S, K

logger = logging.getLogger(__name__)
#: the paper's DWVS steps, of which ``K`` at ``LAMBDA_S``
PAPER_STEPS = 50
MOST_FRAMES = 17


class Validation:
    """The samples of one run: ``due(step)`` says when, ``sample(step)`` writes them."""

    def __init__(self, config: TrainConfig, model, subject, where, height: int, width: int):
        """``where(name)``: the folder the run writes ``name`` into now (the output folder's,
        or its staging area while earlier results are still in place)."""
        self.config, self.model, self.subject = config, model, subject
        self.where = where
        self.height, self.width = height, width
        steps = config.validation_inference_steps
        k = min(max(1, round(K * steps / PAPER_STEPS)), steps - 1)
        self.schedule = DynamicWeightSchedule(LAMBDA_S, LAMBDA_L, k)
        self.frames = config.validation_num_frames or min(model.defaults.num_frames, MOST_FRAMES)

    def due(self, step: int) -> bool:
        c = self.config
        return bool(c.validation_prompts) and (
            step % c.validation_steps == 0 or step == c.max_train_steps
        )

    def sample(self, step: int, parked: list[torch.nn.Module] = (), write: bool = True):
        """The prompts sampled at ``step`` (0: the base model with the class word), written
        to ``samples/step-NNNNNN/`` (returned; with ``write=False`` only sampled, by a
        process that holds shards the main one needs); ``parked``: components moved off the
        GPU for training, brought back while sampling."""
        model = self.model
        device = model.device
        for module in parked:
            module.to(device)
        modes = [(m, m.training) for m in model._components()]
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                videos = self._videos(step)
        finally:
            for module, training in modes:
                module.train(training)
            for module in parked:
                module.to("cpu")
        return self._write(step, videos) if write else None

    def _videos(self, step: int) -> list[tuple[str, torch.Tensor, int]]:
        pipe = CustomCrafterPipeline(self.model, self.subject)
        base = step == 0
        schedule = DynamicWeightSchedule.off() if base else self.schedule
        out = []
        for i, prompt in enumerate(self.config.validation_prompts):
            shown = pipe.base_prompt(prompt) if base else prompt
            generator = torch.Generator().manual_seed(self.config.seed + i)
            result = pipe(
                shown,
                schedule=schedule,
                num_inference_steps=self.config.validation_inference_steps,
                num_frames=self.frames,
                height=self.height,
                width=self.width,
                generator=generator,
                fold_lora=False,
                progress=False,
            )
            out.append((shown, result.videos[0], result.fps))
        return out

    def _write(self, step: int, videos) -> Path:
        folder = self.where("samples") / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (prompt, video, fps) in enumerate(videos):
            write_video(folder / f"{i:02d}-{slug(prompt, 60, 'prompt')}.mp4", video, fps)
            rows.append(("\n".join(textwrap.wrap(prompt, 34)[:6]), to_uint8_frames(video)))
        write_contact_sheet(folder / "contact_sheet.png", rows, scale=max(1, 128 // self.width))
        what = "the base model (class word)" if step == 0 else f"step {step}"
        logger.info("samples of %s: %s", what, folder)
        return folder
