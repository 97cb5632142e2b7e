"""VideoCrafter2, the paper's base model, behind the base-model interface.

Its pieces come from an original ``model.ckpt`` (``checkpoint.py``) or a converted folder
(``folder.py``), both as :class:`VC2Components`; :class:`VideoCrafter2Model` assembles them:
the 3D UNet with fps conditioning, the LDM VAE as a diffusers ``AutoencoderKL``, the OpenCLIP
text tower, and the noise schedule with its ``scale_arr`` signal scaling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from ...errors import UserError
from ..base import BaseVideoModel, ModelDefaults
from .checkpoint import (
    VC2_DEFAULTS,
    VC2Components,
    read_checkpoint,
    read_original_config,
    split_checkpoint,
)
from .folder import read_converted
from .sampler import VC2DDIMSampler
from .schedule import VC2NoiseSchedule
from .text import OpenCLIPTextEncoder, load_openclip_tokenizer
from .unet import SPATIAL_BLOCK_PATTERN, VC2UNet

#: frames per VAE call at VideoCrafter2's size (320x512)
VAE_CHUNK_SIZE = 4


class VideoCrafter2Model(BaseVideoModel):
    """VideoCrafter2: 3D UNet with fps conditioning, LDM VAE, OpenCLIP text encoder, and the
    ``scale_arr`` signal scaling in training noise and DDIM."""

    spatial_block_pattern = SPATIAL_BLOCK_PATTERN

    def __init__(
        self,
        name: str,
        unet: VC2UNet,
        vae,
        text_encoder: OpenCLIPTextEncoder,
        tokenizer,
        noise_schedule: VC2NoiseSchedule,
        defaults: ModelDefaults = VC2_DEFAULTS,
        vae_chunk_size: int = VAE_CHUNK_SIZE,
    ):
        self.noise_schedule = noise_schedule
        super().__init__(name, unet, vae, text_encoder, tokenizer, defaults, vae_chunk_size)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        tokenizer=None,
        config: str | Path | Mapping | None = None,
    ) -> VideoCrafter2Model:
        """Load an original ``model.ckpt``. ``config`` is its original YAML config (a path, or
        its ``model.params`` mapping); without it the architecture is read off the tensors
        and VideoCrafter2's schedule is used. ``tokenizer``: ``load_openclip_tokenizer()``."""
        params = read_original_config(config) if isinstance(config, (str, Path)) else config
        return cls.from_state_dict(
            read_checkpoint(checkpoint),
            tokenizer or load_openclip_tokenizer(),
            name=f"videocrafter2:{checkpoint}",
            config=params,
        )

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        tokenizer,
        name: str = "videocrafter2",
        config: Mapping[str, Any] | None = None,
    ) -> VideoCrafter2Model:
        """Build from the checkpoint's tensors. ``config`` is the original model config's
        ``params`` (``unet_config``, ``first_stage_config``, schedule settings); without it
        the architecture is inferred from the tensors and the VideoCrafter2 settings used."""
        return cls.from_components(split_checkpoint(state, config), tokenizer, name)

    @classmethod
    def from_components(
        cls, components: VC2Components, tokenizer, name: str = "videocrafter2"
    ) -> VideoCrafter2Model:
        """Assemble from split components; the modules share the components' tensors."""
        unet, vae, text_encoder = build_modules(components)
        schedule = VC2NoiseSchedule(**components.noise_schedule)
        return cls(name, unet, vae, text_encoder, tokenizer, schedule)

    @classmethod
    def from_converted(cls, folder: str | Path) -> VideoCrafter2Model:
        """Load a converted folder (memory-mapped safetensors, the bundled tokenizer)."""
        from transformers import AutoTokenizer

        index, components = read_converted(folder)
        model = cls.from_components(components, None, name=str(folder))
        try:  # saved with its padding and length settings (id 0 padding for OpenCLIP)
            model.tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder} has no readable tokenizer/: {exc}") from exc
        model.defaults = ModelDefaults(**index.get("defaults", dataclasses.asdict(VC2_DEFAULTS)))
        model.vae_chunk_size = int(index.get("vae_chunk_size", VAE_CHUNK_SIZE))
        return model

    # --- text ---------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.to(self.device))

    # --- denoiser ------------------------------------------------------------------------
    def predict(self, latents, timesteps, context, fps):
        return self.unet(latents, timesteps, context, fps=fps)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def offloadable_blocks(self):
        unet = self.unet
        return [[*unet.input_blocks, unet.middle_block, *unet.output_blocks]]

    # --- noise schedule ------------------------------------------------------------------
    def make_sampler(self, size: tuple[int, int, int] | None = None) -> VC2DDIMSampler:
        """VideoCrafter2's own DDIM, which undoes its signal scaling."""
        return VC2DDIMSampler(self.noise_schedule)

    @property
    def num_train_timesteps(self) -> int:
        return self.noise_schedule.num_train_timesteps

    def add_noise(self, x0, noise, timesteps):
        return self.noise_schedule.add_noise(x0, noise, timesteps)

    def training_target(self, x0, noise, timesteps):
        return self.noise_schedule.training_target(x0, noise, timesteps)


def build_modules(components: VC2Components):
    """``(unet, vae, text_encoder)`` built on the meta device that take the components'
    tensors as their parameters: no random initialisation and no copy (the modules share
    memory with the state dicts, which may be memory-mapped files)."""
    c = components
    with torch.device("meta"):
        modules = (VC2UNet(c.unet_config), AutoencoderKL(**c.vae_config))
        modules += (OpenCLIPTextEncoder(c.text_config),)
    for module, state, what in zip(
        modules, (c.unet, c.vae, c.text), ("unet", "vae", "text"), strict=True
    ):
        result = module.load_state_dict(dict(state), strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(
                f"the {what} tensors do not match its config: missing "
                f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
            )
        leftover = [n for n, t in module.state_dict(keep_vars=True).items() if t.is_meta]
        leftover += [n for n, t in module.named_buffers() if t.is_meta]
        if leftover:
            raise UserError(f"the {what} has tensors no file provides: {leftover[:3]}")
    return modules
