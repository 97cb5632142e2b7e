"""Split an original VideoCrafter2 checkpoint into its components, and the converted folder.

``split_checkpoint`` accounts for every tensor of a ``model.ckpt``: the UNet (kept under its
original names, which ``VC2UNet`` uses), the VAE (renamed to diffusers' ``AutoencoderKL``),
the OpenCLIP text tower, and the schedule buffers, which are not stored again but checked
against the schedule settings that regenerate them. Any tensor left over is an error.

``write_converted`` saves the components as a folder that loads memory-mapped::

    OUT_DIR/
      customcrafter_model.json        kind, format version, sampling defaults, source
      unet/config.json                VC2UNetConfig
      unet/model.safetensors
      vae/config.json                 a diffusers AutoencoderKL folder
      vae/diffusion_pytorch_model.safetensors
      text_encoder/config.json        OpenCLIPTextConfig
      text_encoder/model.safetensors
      tokenizer/                      the CLIP BPE tokenizer (offline from then on)
      scheduler/scheduler_config.json VC2NoiseSchedule settings
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..io.files import write_json
from .base import ModelDefaults
from .openclip_text import OpenCLIPTextConfig, OpenCLIPTextEncoder, extract_text_state_dict
from .vc2_schedule import VC2NoiseSchedule
from .vc2_unet import VC2UNet, VC2UNetConfig, infer_config_from_state_dict
from .vc2_vae import VC2_SCALE_FACTOR, convert_vc2_vae_state_dict, vae_config_from_ddconfig

UNET_PREFIX = "model.diffusion_model."
TEXT_PREFIX = "cond_stage_model.model."
VAE_PREFIX = "first_stage_model."
MODEL_INDEX = "customcrafter_model.json"
FORMAT_KIND = "videocrafter2"
FORMAT_VERSION = 1


@dataclass
class VC2Components:
    """A VideoCrafter2 checkpoint taken apart; state dicts are keyed as the modules expect."""

    unet_config: VC2UNetConfig
    unet: dict[str, torch.Tensor]
    vae_config: dict[str, Any]
    vae: dict[str, torch.Tensor]
    text_config: OpenCLIPTextConfig
    text: dict[str, torch.Tensor]
    schedule: dict[str, Any]


def read_original_config(path: str | Path) -> dict[str, Any]:
    """The ``model.params`` of an original YAML config such as ``inference_t2v_512_v2.0.yaml``
    (a file holding only the ``params`` mapping, or ``{target, params}``, is accepted too)."""
    import yaml

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


def schedule_settings(params: Mapping[str, Any] | None) -> dict[str, Any]:
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
    from diffusers import AutoencoderKL

    params = dict(config or {})
    try:
        unet_sd = _strip(state, UNET_PREFIX)
        if "unet_config" in params:
            unet_config = VC2UNetConfig.from_dict(params["unet_config"].get("params", {}))
        else:
            unet_config = infer_config_from_state_dict(unet_sd)
        _check_against(lambda: VC2UNet(unet_config), unet_sd, "UNet")

        first_stage = params.get("first_stage_config", {}).get("params", {})
        vae_sd = _strip(state, VAE_PREFIX)
        vae_config = vae_config_from_ddconfig(
            first_stage.get("ddconfig") or infer_ddconfig(vae_sd),
            embed_dim=first_stage.get("embed_dim", vae_sd["quant_conv.weight"].shape[0] // 2),
            scale_factor=params.get("scale_factor", VC2_SCALE_FACTOR),
        )
        vae = convert_vc2_vae_state_dict(state, VAE_PREFIX)
        _check_against(lambda: AutoencoderKL(**vae_config), vae, "VAE")

        text = extract_text_state_dict(state, TEXT_PREFIX)
        text_config = OpenCLIPTextConfig.from_state_dict(text)
        _check_against(lambda: OpenCLIPTextEncoder(text_config), text, "text encoder")
        schedule = schedule_settings(params)
    except (KeyError, ValueError) as exc:
        raise UserError(f"the checkpoint is not a VideoCrafter2 model: {exc}") from exc
    _check_schedule_buffers(state, VC2NoiseSchedule(**schedule))
    return VC2Components(unet_config, unet_sd, vae_config, vae, text_config, text, schedule)


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


# --- the converted folder --------------------------------------------------------------------
def write_converted(
    components: VC2Components,
    tokenizer,
    out_dir: str | Path,
    defaults: ModelDefaults,
    source: str = "",
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``components`` as a converted folder, atomically: a partial conversion never
    takes ``out_dir``'s place. ``training`` (the settings a model was trained with, for
    models this project trains) is kept in the index under ``"training"``."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite:
            raise UserError(f"{out_dir} exists; pass --overwrite to replace it")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MODEL_INDEX).exists():
            raise UserError(
                f"{out_dir} is a folder that does not hold a converted model; "
                "refusing to replace it"
            )
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, config, tensors, file in (
            ("unet", dataclasses.asdict(components.unet_config), components.unet, "model"),
            ("vae", _diffusers_vae_config(components.vae_config), components.vae, None),
            (
                "text_encoder",
                dataclasses.asdict(components.text_config),
                components.text,
                "model",
            ),
        ):
            (tmp / name).mkdir(parents=True)
            config = {k: v for k, v in config.items() if k != "ignored"}
            write_json(tmp / name / "config.json", config)
            filename = f"{file or 'diffusion_pytorch_model'}.safetensors"
            tensors = {k: _prepared(v, dtype) for k, v in tensors.items()}
            save_file(tensors, str(tmp / name / filename), metadata={"format": "pt"})
        (tmp / "scheduler").mkdir()
        write_json(tmp / "scheduler" / "scheduler_config.json", components.schedule)
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(
            tmp / MODEL_INDEX,
            {
                "kind": FORMAT_KIND,
                "format_version": FORMAT_VERSION,
                "source": source,
                "defaults": dataclasses.asdict(defaults),
                **({"training": dict(training)} if training is not None else {}),
            },
        )
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def is_converted(path: str | Path) -> bool:
    return (Path(path) / MODEL_INDEX).is_file()


def read_converted(folder: str | Path) -> tuple[dict[str, Any], VC2Components]:
    """The index and the components of a converted folder; tensors are memory-mapped."""
    folder = Path(folder)
    index = json.loads((folder / MODEL_INDEX).read_text())
    if index.get("kind") != FORMAT_KIND:
        raise UserError(f"{folder} holds a {index.get('kind')!r} model, not {FORMAT_KIND!r}")
    if index.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{folder} was written by a newer CustomCrafter (format "
            f"{index['format_version']}); upgrade to load it"
        )
    try:
        vae_config = _config(folder / "vae")
        components = VC2Components(
            unet_config=VC2UNetConfig(**_config(folder / "unet")),
            unet=load_file(str(folder / "unet" / "model.safetensors")),
            vae_config={k: v for k, v in vae_config.items() if not k.startswith("_")},
            vae=load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")),
            text_config=OpenCLIPTextConfig(**_config(folder / "text_encoder")),
            text=load_file(str(folder / "text_encoder" / "model.safetensors")),
            schedule=_config(folder / "scheduler", "scheduler_config.json"),
        )
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder} is not a complete converted model: {exc}") from exc
    return index, components


def build_modules(components: VC2Components):
    """``(unet, vae, text_encoder)`` built on the meta device that take the components'
    tensors as their parameters: no random initialisation and no copy (the modules share
    memory with the state dicts, which may be memory-mapped files)."""
    from diffusers import AutoencoderKL

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


def _diffusers_vae_config(config: Mapping[str, Any]) -> dict[str, Any]:
    import diffusers

    out = {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__}
    out.update({k: list(v) if isinstance(v, tuple) else v for k, v in config.items()})
    return out


def _prepared(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def _config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    return json.loads((folder / name).read_text())
