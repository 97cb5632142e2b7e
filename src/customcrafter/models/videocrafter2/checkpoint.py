"""Reading an original VideoCrafter2 ``model.ckpt``: its tensors, split into components.

The checkpoint (a ``state_dict`` or DeepSpeed ``module`` container) holds the UNet
(``model.diffusion_model.*``), the LDM VAE (``first_stage_model.*``), the OpenCLIP ViT-H-14
text tower (``cond_stage_model.model.*``) and the schedule buffers. It is read with
``torch.load(weights_only=True)``: tensors only, never arbitrary pickled code.

``split_checkpoint`` accounts for every tensor: the UNet keeps its original names (which
``VC2UNet`` uses), the VAE is renamed to diffusers' ``AutoencoderKL`` layout, the text tower
keeps open_clip's names, and the schedule buffers are not kept but checked against the
schedule settings that regenerate them. Any tensor left over is an error. Without the
original YAML config, every architecture setting is read off the tensors' shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderKL

from ...errors import UserError
from ..base import ModelDefaults
from .schedule import VC2NoiseSchedule
from .text import OpenCLIPTextConfig, OpenCLIPTextEncoder
from .unet import InitTemporalAttention, VC2UNet, VC2UNetConfig
from .vae import VC2_SCALE_FACTOR, build_vc2_vae, vae_config_from_ddconfig

UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "cond_stage_model.model."
VAE_PREFIX = "first_stage_model."
#: open_clip's text towers use 64-dimensional attention heads
TEXT_HEAD_DIM = 64
#: the sampling settings of VideoCrafter2's own inference script (512x320, 16 frames)
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


@dataclass
class VC2Components:
    """A VideoCrafter2 checkpoint taken apart; state dicts are keyed as the modules expect."""

    unet_config: VC2UNetConfig
    unet: dict[str, torch.Tensor]
    vae_config: dict[str, Any]
    vae: dict[str, torch.Tensor]
    text_config: OpenCLIPTextConfig
    text: dict[str, torch.Tensor]
    noise_schedule: dict[str, Any]


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
    if not isinstance(raw, Mapping):
        raise UserError(
            f"{path} holds a {type(raw).__name__}, not a state dict of tensors; "
            "give the original VideoCrafter2 model.ckpt"
        )
    state = {}
    for key, value in raw.items():
        for prefix in ("_forward_module.", "module."):
            key = key.removeprefix(prefix)
        state[key] = value
    if not any(k.startswith(UNET_PREFIX) for k in state):
        raise UserError(f"{path} holds no VideoCrafter UNet ({UNET_PREFIX}* keys)")
    return state


def read_original_config(path: str | Path) -> dict[str, Any]:
    """The ``model.params`` of an original YAML config such as ``inference_t2v_512_v2.0.yaml``
    (a file holding only the ``params`` mapping, or ``{target, params}``, is accepted too)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"could not read the model config {path}: {exc}") from exc
    if isinstance(data, Mapping) and "model" in data:
        data = data["model"]
    if isinstance(data, Mapping) and "params" in data and "target" in data:
        data = data["params"]
    if not isinstance(data, Mapping) or "unet_config" not in data:
        raise UserError(
            f"{path} is not a VideoCrafter model config: expected model.params.unet_config"
        )
    return dict(data)


def noise_schedule_settings(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``VC2NoiseSchedule`` keyword arguments from an original config's ``params`` (the
    VideoCrafter2 settings when there is none)."""
    schedule = VC2NoiseSchedule.from_ldm_params(params) if params else VC2NoiseSchedule()
    return schedule.config


def split_checkpoint(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> VC2Components:
    """Assign every tensor of an original state dict to a component, or raise ``UserError``.

    ``config`` is the original config's ``model.params``; without it the architecture is read
    off the tensors and VideoCrafter2's schedule is assumed. Works on meta tensors too (shapes
    are checked, schedule values only when they are real).
    """
    params = dict(config or {})
    try:
        unet_sd = _strip(state, UNET_PREFIX)
        if "unet_config" in params:
            unet_config = VC2UNetConfig.from_dict(params["unet_config"].get("params", {}))
        else:
            unet_config = infer_unet_config(unet_sd)
        _check_against(lambda: VC2UNet(unet_config), unet_sd, "UNet")

        first_stage = params.get("first_stage_config", {}).get("params", {})
        vae_sd = _strip(state, VAE_PREFIX)
        vae_config = vae_config_from_ddconfig(
            first_stage.get("ddconfig") or infer_ddconfig(vae_sd),
            embed_dim=first_stage.get("embed_dim", vae_sd["quant_conv.weight"].shape[0] // 2),
            scale_factor=params.get("scale_factor", VC2_SCALE_FACTOR),
        )
        vae = convert_vae_state_dict(state, VAE_PREFIX)
        _check_against(lambda: AutoencoderKL(**vae_config), vae, "VAE")

        text = extract_text_state_dict(state, TEXT_PREFIX)
        text_config = infer_text_config(text)
        _check_against(lambda: OpenCLIPTextEncoder(text_config), text, "text encoder")
        noise_schedule = noise_schedule_settings(params)
    except (KeyError, ValueError) as exc:
        raise UserError(f"the checkpoint is not a VideoCrafter2 model: {exc}") from exc
    _check_schedule_buffers(state, VC2NoiseSchedule(**noise_schedule))
    return VC2Components(unet_config, unet_sd, vae_config, vae, text_config, text, noise_schedule)


# --- architecture settings read off the tensors ------------------------------------------
def infer_unet_config(state_dict: Mapping[str, Any]) -> VC2UNetConfig:
    """Recover the architecture from a UNet state dict (keys without ``model.diffusion_model.``).

    Values may be tensors or plain shapes. Head width is read from ``init_attn``, whose
    8 heads are fixed by the architecture, so the checkpoint must have that layer.
    ``temporal_length`` is not stored in the weights and keeps its default; it does not change
    the computation with the supported settings.
    """

    def shape(key: str) -> tuple[int, ...]:
        value = state_dict[key]
        return tuple(value.shape) if hasattr(value, "shape") else tuple(value)

    def count(prefix: str, position: int) -> int:
        """1 + the largest index at dot-separated ``position`` among keys under ``prefix``."""
        return 1 + max(int(k.split(".")[position]) for k in state_dict if k.startswith(prefix))

    if "init_attn.0.proj_in.weight" not in state_dict:
        raise ValueError("cannot infer the head width: the state dict has no init_attn layer")
    model_channels = shape("time_embed.0.weight")[1]
    num_head_channels = shape("init_attn.0.proj_in.weight")[0] // InitTemporalAttention.HEADS

    # input block i is "<ResBlock> [<spatial> <temporal>]" or a lone Downsample ("op")
    channel_mult: list[int] = []
    attention_resolutions: set[int] = set()
    res_blocks_per_level: list[int] = []
    level_blocks, downsample = 0, 1
    for i in range(1, count("input_blocks.", 1)):
        if f"input_blocks.{i}.0.op.weight" in state_dict:
            res_blocks_per_level.append(level_blocks)
            level_blocks, downsample = 0, downsample * 2
            continue
        if level_blocks == 0:
            channel_mult.append(
                shape(f"input_blocks.{i}.0.in_layers.2.weight")[0] // model_channels
            )
        level_blocks += 1
        if f"input_blocks.{i}.1.norm.weight" in state_dict:
            attention_resolutions.add(downsample)
    res_blocks_per_level.append(level_blocks)
    if len(set(res_blocks_per_level)) != 1:
        raise ValueError(f"uneven ResBlocks per level: {res_blocks_per_level}")

    # the middle stage always has a spatial transformer at 1 (and a temporal one at 2)
    block = "middle_block.1"
    depth = count(f"{block}.transformer_blocks.", 3)
    temporal = "middle_block.2.norm.weight" in state_dict
    context_dim = shape(f"{block}.transformer_blocks.0.attn2.to_k.weight")[1]
    # init_attn's attn2 reads the text (width context_dim) or the frames (its inner width);
    # when the two widths are equal the weights cannot tell, and VideoCrafter2's setting wins
    init_k = shape("init_attn.0.transformer_blocks.0.attn2.to_k.weight")
    temporal_selfatt_only = init_k[1] == init_k[0] or init_k[1] != context_dim
    temporal_depth = count("middle_block.2.transformer_blocks.", 3) if temporal else 1
    return VC2UNetConfig(
        in_channels=shape("input_blocks.0.0.weight")[1],
        out_channels=shape("out.2.weight")[0],
        model_channels=model_channels,
        attention_resolutions=tuple(sorted(attention_resolutions, reverse=True)),
        num_res_blocks=res_blocks_per_level[0],
        channel_mult=tuple(channel_mult),
        num_head_channels=num_head_channels,
        transformer_depth=depth,
        temporal_transformer_depth=temporal_depth,
        context_dim=context_dim,
        temporal_selfatt_only=temporal_selfatt_only,
        use_linear=len(shape(f"{block}.proj_in.weight")) == 2,
        temporal_conv="input_blocks.1.0.temopral_conv.conv1.2.weight" in state_dict,
        temporal_attention=temporal,
        addition_attention=True,
        fps_cond="fps_embedding.0.weight" in state_dict,
    )


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


def infer_text_config(
    state_dict: Mapping[str, torch.Tensor | torch.Size | tuple[int, ...] | list[int]],
    output_layer: str = "penultimate",
    heads: int | None = None,
) -> OpenCLIPTextConfig:
    """The text tower's sizes read off its tensors (or their shapes), keys without a prefix.

    ``heads`` is not stored in the checkpoint; unless given, it is ``width // 64`` as in
    open_clip's text towers (16 for ViT-H-14).
    """

    def shape(key: str) -> tuple[int, ...]:
        value = state_dict[key]
        return tuple(value.shape) if hasattr(value, "shape") else tuple(value)

    vocab_size, width = shape("token_embedding.weight")
    context_length = shape("positional_embedding")[0]
    blocks = {
        int(m.group(1))
        for key in state_dict
        if (m := re.match(r"transformer\.resblocks\.(\d+)\.", key))
    }
    hidden = shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
    return OpenCLIPTextConfig(
        vocab_size=vocab_size,
        context_length=context_length,
        width=width,
        heads=heads or max(width // TEXT_HEAD_DIM, 1),
        layers=len(blocks),
        mlp_ratio=hidden / width,
        output_layer=output_layer,
    )


# --- tensors renamed or checked ---------------------------------------------------------
def extract_text_state_dict(
    checkpoint_sd: Mapping[str, torch.Tensor], prefix: str = TEXT_PREFIX
) -> dict[str, torch.Tensor]:
    """The text-tower tensors of a VideoCrafter2 checkpoint, with ``prefix`` stripped.

    Every tensor under ``prefix`` must be a parameter of ``OpenCLIPTextEncoder`` (built with
    the sizes inferred from them) and every parameter must be present; otherwise a
    ``KeyError`` names the unplaced and missing keys.
    """
    text_sd = {k[len(prefix) :]: v for k, v in checkpoint_sd.items() if k.startswith(prefix)}
    if not text_sd:
        raise KeyError(f"no tensors under {prefix!r} in the checkpoint")
    try:
        config = infer_text_config(text_sd)
    except KeyError as err:
        raise KeyError(f"text tower tensor {prefix}{err.args[0]} is missing") from err
    with torch.device("meta"):
        expected = set(OpenCLIPTextEncoder(config).state_dict())
    unplaced = sorted(set(text_sd) - expected)
    missing = sorted(expected - set(text_sd))
    if unplaced or missing:
        raise KeyError(
            f"text tower keys do not match: unplaced {[prefix + k for k in unplaced]}, "
            f"missing {[prefix + k for k in missing]}"
        )
    return text_sd


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


def convert_vae_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = VAE_PREFIX
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
    prefix: str = VAE_PREFIX,
) -> AutoencoderKL:
    """The VAE of a VideoCrafter2 state dict, loaded strictly, frozen, in eval mode."""
    vae = build_vc2_vae(ddconfig, embed_dim, scale_factor)
    vae.load_state_dict(convert_vae_state_dict(state_dict, prefix), strict=True)
    vae.requires_grad_(False)
    return vae.eval()


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _check_against(build, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Every tensor of the module ``build()`` makes is in ``state`` with its shape, and
    nothing else is."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise UserError(
            f"the checkpoint's {what} does not match the VideoCrafter2 architecture: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )


def _check_schedule_buffers(state: Mapping[str, torch.Tensor], schedule: VC2NoiseSchedule):
    expected = schedule.buffers()
    prefixes = (UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX)
    rest = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    unknown = sorted(set(rest) - set(expected))
    if unknown:
        raise UserError(f"the checkpoint holds tensors no component uses: {unknown[:5]}")
    for key, value in rest.items():
        want = expected[key]
        if tuple(value.shape) != tuple(want.shape):
            raise UserError(
                f"schedule buffer {key} has shape {tuple(value.shape)}, the schedule settings "
                f"give {tuple(want.shape)}; pass the model's original config"
            )
        if value.device.type != "meta" and not torch.allclose(
            value.float(), want, rtol=1e-5, atol=1e-7
        ):
            raise UserError(
                f"schedule buffer {key} differs from the schedule the settings "
                f"{schedule.config} give; pass the model's original config"
            )
