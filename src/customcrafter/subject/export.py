"""A Wan subject module as a LoRA file other tools load: ComfyUI's or diffusers'.

- ``comfyui``: the original Wan module names, ``diffusion_model.blocks.N.self_attn.q``
  (``k``, ``v``, ``o``), ``cross_attn.*``, ``ffn.0`` / ``ffn.2``, each with ``lora_A`` /
  ``lora_B`` weights and an ``alpha``: what ComfyUI's LoRA loader reads (diffusers'
  ``load_lora_weights`` converts it too).
- ``diffusers``: ``transformer.blocks.N.attn1.to_q.lora_A.weight``, ...: what
  ``WanPipeline.load_lora_weights`` reads.

The LoRA scale ``alpha / rank`` is folded into ``lora_B`` and ``alpha`` written as the rank,
so every loader applies the module at exactly the weight it is given. A learnt token (the
paper's ``<new1>``) is a new row of the text encoder's embedding table, which neither format
carries: such a subject is refused unless ``drop_token`` says to export the LoRA alone.

A subject of Wan 2.2 A14B that adapts both experts is written one file per expert
(``expert="high"`` for ``transformer``, ``"low"`` for ``transformer_2``), as ComfyUI loads a
LoRA into each expert's model and diffusers into ``transformer_2`` with
``load_lora_weights(..., load_into_transformer_2=True)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..io.files import atomic_path
from ..models.wan import LOW_NOISE_PREFIX as LOW_NOISE
from .module import read_metadata, resolve_subject_path

FORMATS = ("comfyui", "diffusers")

#: diffusers' names inside a Wan block -> the original Wan code's
_WAN_ORIGINAL = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_WAN_TARGET = re.compile(r"blocks\.(\d+)\.(" + "|".join(map(re.escape, _WAN_ORIGINAL)) + r")")


def export_subject(
    subject: str | Path,
    out: str | Path,
    format: str = "comfyui",
    drop_token: bool = False,
    overwrite: bool = False,
    expert: str | None = None,
) -> Path:
    """Write ``subject`` (a Wan subject module file or training folder) as a LoRA file in
    ``format``, atomically; returns the path written."""
    if format not in FORMATS:
        raise UserError(f"--format is one of {', '.join(FORMATS)}, got {format!r}")
    path = resolve_subject_path(subject)
    metadata = read_metadata(path)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"the exported file is a .safetensors file, got {out.name}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    targets, prefix = _expert_targets(path, metadata.targets, expert)
    foreign = [t for t in targets if not _WAN_TARGET.fullmatch(t)]
    if foreign:
        raise UserError(
            f"{path} was trained on {metadata.base_model!r}, not a Wan model (its layer "
            f"{foreign[0]} has no Wan name): only Wan subject modules export to {format}"
        )
    if metadata.tokens and not drop_token:
        raise UserError(
            f"{path} carries the learnt token(s) {', '.join(metadata.tokens)}, a new row of "
            f"the text encoder's embedding table that {format} LoRA files cannot hold. Pass "
            "--drop-token to export the LoRA alone (prompts in the other tool then name the "
            "subject by its class word, e.g. "
            f"{next(iter(metadata.initializer_words.values()))!r}, with less likeness), or "
            "train the subject again with --identifier WORD (an existing rare word such as "
            "sks, written before the class word in the prompts) so that the LoRA alone "
            "carries it"
        )
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "token_embeddings"}
    lora = _scaled(tensors, targets, prefix, metadata.rank, metadata.lora_alpha)
    converted = _comfyui(lora, metadata.rank) if format == "comfyui" else _diffusers(lora)
    info = {
        "format": format,
        "source": "customcrafter",
        "base_model": metadata.base_model,
        "rank": str(metadata.rank),
        "expert": expert or "",
        "dropped_tokens": json.dumps(metadata.tokens if drop_token else []),
        "identifier": metadata.identifier or "",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(converted, str(tmp), metadata=info)
    return out


def _expert_targets(path, targets: list[str], expert: str | None) -> tuple[list[str], str]:
    """The targets (named within their expert) that one file holds, and their prefix."""
    low = [t[len(LOW_NOISE) :] for t in targets if t.startswith(LOW_NOISE)]
    high = [t for t in targets if not t.startswith(LOW_NOISE)]
    if expert is None:
        if low and high:
            raise UserError(
                f"{path} adapts both experts of Wan 2.2 A14B; export one file per expert with "
                "--expert high and --expert low (ComfyUI loads one LoRA into each expert's "
                "model; diffusers loads the low one with load_lora_weights(..., "
                "load_into_transformer_2=True))"
            )
        return (high, "") if high else (low, LOW_NOISE)
    if expert not in ("high", "low"):
        raise UserError(f"--expert is high or low, got {expert!r}")
    chosen = high if expert == "high" else low
    if not chosen:
        raise UserError(f"{path} has no layers in the {expert}-noise expert; leave out --expert")
    return chosen, ("" if expert == "high" else LOW_NOISE)


def _scaled(tensors, targets, prefix: str, rank: int, alpha: float) -> dict:
    """``{target: (A, B * alpha / rank)}`` in float32, ``targets`` named within the expert
    whose layers in the subject file carry ``prefix``."""
    scale = float(alpha) / float(rank)
    out = {}
    for target in targets:
        a = tensors[f"{prefix}{target}.lora_A.weight"].float().contiguous()
        b = (tensors[f"{prefix}{target}.lora_B.weight"].float() * scale).contiguous()
        out[target] = (a, b)
    return out


def _comfyui(lora, rank: int) -> dict[str, torch.Tensor]:
    out = {}
    for target, (a, b) in lora.items():
        block, inner = _WAN_TARGET.fullmatch(target).groups()
        name = f"diffusion_model.blocks.{block}.{_WAN_ORIGINAL[inner]}"
        out[f"{name}.lora_A.weight"] = a
        out[f"{name}.lora_B.weight"] = b
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def _diffusers(lora) -> dict[str, torch.Tensor]:
    out = {}
    for target, (a, b) in lora.items():
        out[f"transformer.{target}.lora_A.weight"] = a
        out[f"transformer.{target}.lora_B.weight"] = b
    return out
