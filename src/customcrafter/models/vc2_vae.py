"""The VideoCrafter2 first-stage VAE as a diffusers ``AutoencoderKL``.

VideoCrafter2 keeps the Stable Diffusion image autoencoder (LDM ``AutoencoderKL``) and runs
it frame by frame. Its checkpoint stores it under ``first_stage_model.*`` with the LDM
module names; ``convert_vc2_vae_state_dict`` renames those tensors to diffusers' layout so
that ``build_vc2_vae`` gives the same network with diffusers' implementation.

Latents here are the scaled ones the UNet sees: ``posterior_mean * scale_factor``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from diffusers import AutoencoderKL

__all__ = [
    "VC2_FIRST_STAGE_PREFIX",
    "VC2_SCALE_FACTOR",
    "VC2_VAE_DDCONFIG",
    "build_vc2_vae",
    "convert_vc2_vae_state_dict",
    "decode_frames",
    "encode_mean_scaled",
    "load_vc2_vae",
    "vae_config_from_ddconfig",
]

VC2_FIRST_STAGE_PREFIX = "first_stage_model."
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

# LDM ResnetBlock / AttnBlock part names -> diffusers ResnetBlock2D / Attention names.
_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_ATTN_PARTS = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
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


def _convert_key(key: str, num_levels: int) -> str | None:
    """diffusers name of one LDM VAE key (without prefix), or None when it has none."""
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key)
    if m:
        return f"{m[1]}.conv_norm_out.{m[2]}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m and m[3] in _RESNET_PARTS:
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    # LDM numbers the decoder levels by resolution (0 = full size, the last one run);
    # diffusers numbers them in execution order.
    m = re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m and m[3] in _RESNET_PARTS:
        level = num_levels - 1 - int(m[1])
        return f"decoder.up_blocks.{level}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if m:
        level = num_levels - 1 - int(m[1])
        return f"decoder.up_blocks.{level}.upsamplers.0.conv.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(\w+)\.(weight|bias)", key)
    if m and m[3] in _RESNET_PARTS:
        index = int(m[2]) - 1
        return f"{m[1]}.mid_block.resnets.{index}.{_RESNET_PARTS[m[3]]}.{m[4]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(\w+)\.(weight|bias)", key)
    if m and m[2] in _ATTN_PARTS:
        return f"{m[1]}.mid_block.attentions.0.{_ATTN_PARTS[m[2]]}.{m[3]}"
    return None


def convert_vc2_vae_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = VC2_FIRST_STAGE_PREFIX
) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` state dict from the ``prefix``-ed LDM VAE tensors of a
    VideoCrafter2 checkpoint; keys without ``prefix`` are ignored (the UNet, text encoder
    and schedule buffers live beside the VAE).

    The mid-block attention projections are 1x1 convs in LDM (``[c, c, 1, 1]``) and
    Linear layers in diffusers (``[c, c]``). Raises ``KeyError`` naming every VAE key that
    has no diffusers counterpart, so nothing is silently dropped.
    """
    ldm = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not ldm:
        raise KeyError(f"no keys starting with {prefix!r}")
    up_levels = {int(m[1]) for k in ldm if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    num_levels = max(up_levels) + 1 if up_levels else 0
    out: dict[str, torch.Tensor] = {}
    unconverted = []
    for key, tensor in ldm.items():
        new_key = _convert_key(key, num_levels)
        if new_key is None:
            unconverted.append(prefix + key)
            continue
        if ".mid_block.attentions." in new_key and new_key.endswith(".weight") and tensor.ndim == 4:
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        out[new_key] = tensor
    if unconverted:
        raise KeyError(f"{len(unconverted)} VAE keys have no diffusers counterpart: {unconverted}")
    return out


def load_vc2_vae(
    state_dict: Mapping[str, torch.Tensor],
    ddconfig: Mapping | None = None,
    embed_dim: int = 4,
    scale_factor: float = VC2_SCALE_FACTOR,
    prefix: str = VC2_FIRST_STAGE_PREFIX,
) -> AutoencoderKL:
    """The VAE of a VideoCrafter2 state dict, loaded strictly, frozen, in eval mode."""
    vae = build_vc2_vae(ddconfig, embed_dim, scale_factor)
    vae.load_state_dict(convert_vc2_vae_state_dict(state_dict, prefix), strict=True)
    vae.requires_grad_(False)
    return vae.eval()


@torch.no_grad()
def encode_mean_scaled(vae: AutoencoderKL, image: torch.Tensor) -> torch.Tensor:
    """Scaled posterior mean ``[b, z, h/s, w/s]`` of ``image`` ``[b, 3, h, w]`` in [-1, 1]
    (the original's ``encode_first_stage`` with the mode instead of a sample)."""
    image = image.to(device=vae.device, dtype=vae.dtype)
    return vae.encode(image).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def decode_frames(vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
    """Video ``[b, 3, f, H, W]`` from scaled latents ``[b, z, f, h, w]``.

    The 2D VAE sees every frame on its own, so frames are decoded ``chunk_size`` at a time
    to bound memory; results equal the original's one-frame-at-a-time decoding.
    """
    b, c, f, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    flat = flat.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    frames = torch.cat([vae.decode(chunk).sample for chunk in flat.split(chunk_size)])
    return frames.reshape(b, f, *frames.shape[1:]).permute(0, 2, 1, 3, 4)
