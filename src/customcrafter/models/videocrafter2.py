"""VideoCrafter2, the paper's base model, from its original checkpoint.

The original ``model.ckpt`` (a ``state_dict`` or DeepSpeed ``module`` container) holds the
UNet (``model.diffusion_model.*``), the LDM VAE (``first_stage_model.*``), the OpenCLIP
ViT-H-14 text tower (``cond_stage_model.model.*``) and the schedule buffers. It is read with
``torch.load(weights_only=True)``: tensors only, never arbitrary pickled code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults
from .openclip_text import OpenCLIPTextConfig, OpenCLIPTextEncoder, extract_text_state_dict
from .vc2_schedule import VC2NoiseSchedule
from .vc2_unet import SPATIAL_BLOCK_PATTERN, VC2UNet, VC2UNetConfig, infer_config_from_state_dict
from .vc2_vae import VC2_SCALE_FACTOR, load_vc2_vae

UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "cond_stage_model.model."
VAE_PREFIX = "first_stage_model."

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


def load_videocrafter2(checkpoint: str | Path, tokenizer=None) -> VideoCrafter2Model:
    """Load the original ``model.ckpt``; the architecture is inferred from its tensors."""
    state = read_checkpoint(checkpoint)
    return VideoCrafter2Model.from_state_dict(
        state, tokenizer or load_openclip_tokenizer(), name=f"videocrafter2:{checkpoint}"
    )


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


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
        params = dict(config or {})
        unet_sd = _strip(state, UNET_PREFIX)
        if "unet_config" in params:
            unet_config = VC2UNetConfig.from_dict(params["unet_config"]["params"])
        else:
            unet_config = infer_config_from_state_dict(unet_sd)
        unet = VC2UNet(unet_config)
        _load_strict(unet, unet_sd, "UNet")
        ddconfig = params.get("first_stage_config", {}).get("params", {}).get("ddconfig")
        vae = load_vc2_vae(
            state,
            ddconfig=ddconfig or infer_ddconfig(_strip(state, VAE_PREFIX)),
            scale_factor=params.get("scale_factor", VC2_SCALE_FACTOR),
        )
        text_sd = extract_text_state_dict(state, TEXT_PREFIX)
        text_encoder = OpenCLIPTextEncoder(OpenCLIPTextConfig.from_state_dict(text_sd))
        _load_strict(text_encoder, text_sd, "text encoder")
        schedule = VC2NoiseSchedule.from_ldm_params(params) if params else VC2NoiseSchedule()
        return cls(name, unet, vae, text_encoder, tokenizer, schedule)

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


def infer_ddconfig(vae_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The LDM VAE's ``ddconfig`` read off its tensors (keys without ``first_stage_model.``)."""
    ch, in_channels = vae_state["encoder.conv_in.weight"].shape[:2]
    levels = 1 + max(int(k.split(".")[2]) for k in vae_state if k.startswith("encoder.down."))
    blocks = 1 + max(
        int(k.split(".")[4]) for k in vae_state if k.startswith("encoder.down.0.block.")
    )
    mult = [
        vae_state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)
    ]
    z_channels = vae_state["decoder.conv_in.weight"].shape[1]
    return {
        "double_z": vae_state["encoder.conv_out.weight"].shape[0] == 2 * z_channels,
        "z_channels": z_channels,
        "resolution": 256,
        "in_channels": in_channels,
        "out_ch": vae_state["decoder.conv_out.weight"].shape[0],
        "ch": ch,
        "ch_mult": mult,
        "num_res_blocks": blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"the checkpoint's {what} does not match the VideoCrafter2 architecture: "
            f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
