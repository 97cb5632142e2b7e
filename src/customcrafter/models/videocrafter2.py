"""VideoCrafter2, the paper's base model, from its original checkpoint.

The original ``model.ckpt`` (a ``state_dict`` or DeepSpeed ``module`` container) holds the
UNet (``model.diffusion_model.*``), the LDM VAE (``first_stage_model.*``), the OpenCLIP
ViT-H-14 text tower (``cond_stage_model.model.*``) and the schedule buffers. It is read with
``torch.load(weights_only=True)``: tensors only, never arbitrary pickled code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults
from .openclip_text import OpenCLIPTextEncoder
from .vc2_convert import (
    UNET_PREFIX,
    VC2Components,
    build_modules,
    read_converted,
    read_original_config,
    split_checkpoint,
    write_converted,
)
from .vc2_schedule import VC2NoiseSchedule
from .vc2_unet import SPATIAL_BLOCK_PATTERN, VC2UNet

# OpenCLIP ViT-H-14 uses OpenAI CLIP's BPE vocabulary; this hub repository ships it in the
# transformers format. Point $CUSTOMCRAFTER_OPENCLIP_TOKENIZER at a local copy to use another.
OPENCLIP_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

VC2_DEFAULTS = ModelDefaults(
    num_frames=16,
    height=320,
    width=512,
    fps=28,
    num_inference_steps=50,
    guidance_scale=12.0,
    eta=1.0,
    negative_prompt="",
)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict of an original ``.ckpt`` (``state_dict`` or DeepSpeed ``module``
    container), loaded without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VideoCrafter2 checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a bad or unsafe file is the user's to replace
        raise UserError(
            f"could not read {path} as a weights-only PyTorch checkpoint: {exc}"
        ) from exc
    for container in ("state_dict", "module"):
        if isinstance(raw, Mapping) and container in raw and isinstance(raw[container], Mapping):
            raw = raw[container]
            break
    state = {}
    for key, value in raw.items():
        for prefix in ("_forward_module.", "module."):
            key = key.removeprefix(prefix)
        state[key] = value
    if not any(k.startswith(UNET_PREFIX) for k in state):
        raise UserError(f"{path} holds no VideoCrafter UNet ({UNET_PREFIX}* keys)")
    return state


def load_openclip_tokenizer(source: str | None = None):
    """The CLIP BPE tokenizer as open_clip uses it: 77 tokens, padded with id 0."""
    from transformers import CLIPTokenizer

    source = source or os.environ.get("CUSTOMCRAFTER_OPENCLIP_TOKENIZER", OPENCLIP_TOKENIZER)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"could not load the OpenCLIP tokenizer from {source!r}: {exc}\n"
            f"Download {OPENCLIP_TOKENIZER} into your Hugging Face cache, or set "
            "CUSTOMCRAFTER_OPENCLIP_TOKENIZER to a folder holding vocab.json and merges.txt."
        ) from exc
    tokenizer.pad_token = "!"  # id 0: open_clip pads with zeros
    tokenizer.model_max_length = 77
    return tokenizer


def load_videocrafter2(
    checkpoint: str | Path, tokenizer=None, config: str | Path | Mapping | None = None
) -> VideoCrafter2Model:
    """Load an original ``model.ckpt``, or a folder written by ``convert_videocrafter2``.

    ``config`` is the original YAML config (a path, or its ``model.params`` mapping); without
    it the architecture is read off the tensors and VideoCrafter2's schedule is used.
    """
    from .vc2_convert import is_converted

    if is_converted(checkpoint):
        return VideoCrafter2Model.from_converted(checkpoint)
    params = read_original_config(config) if isinstance(config, (str, Path)) else config
    state = read_checkpoint(checkpoint)
    return VideoCrafter2Model.from_state_dict(
        state,
        tokenizer or load_openclip_tokenizer(),
        name=f"videocrafter2:{checkpoint}",
        config=params,
    )


def convert_videocrafter2(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: str | Path | Mapping | None = None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an original ``model.ckpt`` as a folder of safetensors components (see
    ``vc2_convert``) that ``--base OUT_DIR`` loads memory-mapped and offline."""
    params = read_original_config(config) if isinstance(config, (str, Path)) else config
    components = split_checkpoint(read_checkpoint(checkpoint), params)
    return write_converted(
        components,
        tokenizer or load_openclip_tokenizer(),
        out_dir,
        VC2_DEFAULTS,
        source=Path(checkpoint).name,
        dtype=dtype,
        overwrite=overwrite,
    )


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
        schedule: VC2NoiseSchedule,
        defaults: ModelDefaults = VC2_DEFAULTS,
        vae_chunk_size: int = 4,
    ):
        self.schedule = schedule
        super().__init__(name, unet, vae, text_encoder, tokenizer, defaults, vae_chunk_size)

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
        schedule = VC2NoiseSchedule(**components.schedule)
        return cls(name, unet, vae, text_encoder, tokenizer, schedule)

    @classmethod
    def from_converted(cls, folder: str | Path) -> VideoCrafter2Model:
        """Load a folder written by ``convert_videocrafter2`` (memory-mapped safetensors)."""
        from transformers import AutoTokenizer

        index, components = read_converted(folder)
        model = cls.from_components(components, None, name=str(folder))
        try:  # saved with its padding and length settings (id 0 padding for OpenCLIP)
            model.tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder} has no readable tokenizer/: {exc}") from exc
        model.defaults = ModelDefaults(**index.get("defaults", dataclasses.asdict(VC2_DEFAULTS)))
        return model

    # --- text ---------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.to(self.device))

    # --- denoiser ------------------------------------------------------------------------
    def predict(self, latents, timesteps, context, fps):
        return self.unet(latents, timesteps, context, fps=fps)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    # --- noise schedule ------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_train_timesteps

    def add_noise(self, x0, noise, timesteps):
        return self.schedule.add_noise(x0, noise, timesteps)

    def training_target(self, x0, noise, timesteps):
        return self.schedule.training_target(x0, noise, timesteps)

    def make_sampler(self):
        return self.schedule.make_sampler()
