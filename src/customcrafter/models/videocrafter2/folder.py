"""The converted folder: a VideoCrafter2 model as separate safetensors components that load
memory-mapped and offline (``customcrafter convert videocrafter2``)::

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

The shapes model this project trains ships in this format too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...errors import UserError
from ...io.files import write_json
from ..base import ModelDefaults
from .checkpoint import (
    VC2_DEFAULTS,
    VC2Components,
    read_checkpoint,
    read_original_config,
    split_checkpoint,
)
from .text import OpenCLIPTextConfig, load_openclip_tokenizer
from .unet import VC2UNetConfig

MODEL_INDEX = "customcrafter_model.json"
FORMAT_KIND = "videocrafter2"
FORMAT_VERSION = 1


def convert_videocrafter2(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: str | Path | Mapping | None = None,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an original ``model.ckpt`` as a converted folder that ``--base OUT_DIR`` loads.

    ``config`` is the original YAML config (a path, or its ``model.params`` mapping); without
    it the architecture is read off the tensors. ``tokenizer`` defaults to
    ``load_openclip_tokenizer()``; ``dtype`` stores the weights in that precision.
    """
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


def write_converted(
    components: VC2Components,
    tokenizer,
    out_dir: str | Path,
    defaults: ModelDefaults,
    source: str = "",
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    training: Mapping[str, Any] | None = None,
    vae_chunk_size: int | None = None,
) -> Path:
    """Write ``components`` as a converted folder, atomically: a partial conversion never
    takes ``out_dir``'s place. ``training`` (the settings a model was trained with, for
    models this project trains) is kept in the index under ``"training"``, and
    ``vae_chunk_size`` (frames per VAE call, when not VideoCrafter2's 4) under its name."""
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
        write_json(tmp / "scheduler" / "scheduler_config.json", components.noise_schedule)
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(
            tmp / MODEL_INDEX,
            {
                "kind": FORMAT_KIND,
                "format_version": FORMAT_VERSION,
                "source": source,
                "defaults": dataclasses.asdict(defaults),
                **({"training": dict(training)} if training is not None else {}),
                **({"vae_chunk_size": vae_chunk_size} if vae_chunk_size is not None else {}),
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
            noise_schedule=_config(folder / "scheduler", "scheduler_config.json"),
        )
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder} is not a complete converted model: {exc}") from exc
    return index, components


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
