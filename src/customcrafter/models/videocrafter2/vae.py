"""The VideoCrafter2 first-stage VAE as a diffusers ``AutoencoderKL``.

VideoCrafter2 keeps the Stable Diffusion image autoencoder (LDM ``AutoencoderKL``) and runs
it frame by frame. Its checkpoint stores it under ``first_stage_model.*`` with the LDM
module names (``checkpoint.convert_vae_state_dict`` renames them); ``build_vc2_vae`` gives
the same network with diffusers' implementation.

Latents here are the scaled ones the UNet sees: ``posterior_mean * scale_factor``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import AutoencoderKL

__all__ = [
    "VC2_SCALE_FACTOR",
    "VC2_VAE_DDCONFIG",
    "build_vc2_vae",
    "encode_mean_scaled",
    "vae_config_from_ddconfig",
]

#: ``LatentDiffusion.scale_factor`` of VideoCrafter2 (the SD 1.x value)
VC2_SCALE_FACTOR = 0.18215
#: ``first_stage_config.params.ddconfig`` of the full-size checkpoint
VC2_VAE_DDCONFIG: dict = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 512,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def vae_config_from_ddconfig(
    ddconfig: Mapping, embed_dim: int = 4, scale_factor: float = VC2_SCALE_FACTOR
) -> dict:
    """diffusers ``AutoencoderKL`` config equivalent to an LDM ``ddconfig``.

    Only the configurations diffusers can express are accepted: a Gaussian posterior
    (``double_z``), ``embed_dim == z_channels`` (diffusers' quant convs keep the channel
    count) and attention in the mid blocks only (``attn_resolutions == []``).
    """
    if not ddconfig.get("double_z", True):
        raise ValueError("ddconfig.double_z must be true: the VAE has a Gaussian posterior")
    if int(embed_dim) != int(ddconfig["z_channels"]):
        raise ValueError(
            f"embed_dim {embed_dim} != z_channels {ddconfig['z_channels']}: "
            "diffusers' AutoencoderKL cannot change the channel count in its quant convs"
        )
    if list(ddconfig.get("attn_resolutions", [])):
        raise ValueError(
            f"attn_resolutions {ddconfig['attn_resolutions']} is not supported: "
            "diffusers' AutoencoderKL has attention in the mid blocks only"
        )
    levels = len(ddconfig["ch_mult"])
    return {
        "in_channels": int(ddconfig["in_channels"]),
        "out_channels": int(ddconfig["out_ch"]),
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(int(ddconfig["ch"]) * int(m) for m in ddconfig["ch_mult"]),
        # LDM's encoder has num_res_blocks resnets per level and its decoder one more,
        # exactly like diffusers' layers_per_block
        "layers_per_block": int(ddconfig["num_res_blocks"]),
        "act_fn": "silu",
        "latent_channels": int(ddconfig["z_channels"]),
        "norm_num_groups": 32,
        "sample_size": int(ddconfig["resolution"]),
        "scaling_factor": float(scale_factor),
    }


def build_vc2_vae(
    ddconfig: Mapping | None = None, embed_dim: int = 4, scale_factor: float = VC2_SCALE_FACTOR
) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` shaped like ``ddconfig`` (default: the
    full-size VideoCrafter2 VAE). Works under ``with torch.device("meta"):``."""
    if ddconfig is None:
        ddconfig = VC2_VAE_DDCONFIG
    config = vae_config_from_ddconfig(ddconfig, embed_dim, scale_factor)
    return AutoencoderKL(**config)


@torch.no_grad()
def encode_mean_scaled(vae: AutoencoderKL, image: torch.Tensor) -> torch.Tensor:
    """Scaled posterior mean ``[b, z, h/s, w/s]`` of ``image`` ``[b, 3, h, w]`` in [-1, 1]
    (the original's ``encode_first_stage`` with the mode instead of a sample)."""
    image = image.to(device=vae.device, dtype=vae.dtype)
    return vae.encode(image).latent_dist.mean * vae.config.scaling_factor
