"""How other tools name a HunyuanVideo 1.5 subject module's layers in their LoRA files.

- ``diffusers``: ``transformer.transformer_blocks.N.attn.to_q.lora_A.weight``, ...: what the
  transformer's ``load_lora_adapter`` reads (``HunyuanVideo15Pipeline`` has no
  ``load_lora_weights``).
- ``comfyui``: ComfyUI's HunyuanVideo model (which holds 1.5) is built of Flux-style
  double-stream blocks whose image and text streams each have one fused ``qkv`` layer:
  ``diffusion_model.double_blocks.N.img_attn.qkv`` for the video tokens' ``to_q``, ``to_k``,
  ``to_v``, ``txt_attn.qkv`` for the text tokens' ``add_q_proj``, ``add_k_proj``,
  ``add_v_proj`` (in that order, each a third of the rows), ``img_attn.proj`` /
  ``txt_attn.proj`` for the outputs, ``img_mlp.0`` / ``.2`` and ``txt_mlp.*`` for the
  feed-forward layers (ComfyUI's own diffusers-to-ComfyUI map for this block design,
  ``comfy.utils.flux_to_diffusers``). The LoRA of a fused layer holds its parts' LoRAs
  exactly: the down matrices stacked, the up matrix block-diagonal (zero rows where a part
  is not adapted), so ``up @ down`` is each part's ``B @ A`` in its rows. No ``alpha``: the
  scale is in the up matrix, and ComfyUI applies a LoRA without one at scale 1.
"""

from __future__ import annotations

import re

import torch

from .base import lora_entries

_TARGET = re.compile(r"transformer_blocks\.(\d+)\.(.+)")
#: diffusers' layer in a block -> (ComfyUI's layer, which third of its rows; None: all)
_COMFYUI = {
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None),
    "attn.to_add_out": ("txt_attn.proj", None),
    "ff.net.0.proj": ("img_mlp.0", None),
    "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None),
    "ff_context.net.2": ("txt_mlp.2", None),
}


class HunyuanVideo15LoraNaming:
    """The ``models.base.LoraNaming`` of HunyuanVideo 1.5 (module docstring)."""

    family = "HunyuanVideo 1.5"
    formats = ("comfyui", "diffusers")
    experts: dict[str, str] = {}

    def owns(self, target: str) -> bool:
        match = _TARGET.fullmatch(target)
        return match is not None and match.group(2) in _COMFYUI

    def tensors(self, target: str, a, b, rank: int, format: str) -> dict[str, torch.Tensor]:
        """One layer's entries in diffusers' names (``convert`` writes ComfyUI's)."""
        return {
            f"transformer.{target}.lora_A.weight": a,
            f"transformer.{target}.lora_B.weight": b,
        }

    def convert(self, lora: dict, rank: int, format: str) -> dict[str, torch.Tensor]:
        """Every layer's entries: ``lora`` is ``{target: (A, B)}``, the scale in ``B``."""
        if format == "diffusers":
            return lora_entries(self, lora, rank, format)
        fused: dict[str, list] = {}
        for target, (a, b) in lora.items():
            block, inner = _TARGET.fullmatch(target).groups()
            layer, third = _COMFYUI[inner]
            fused.setdefault(f"diffusion_model.double_blocks.{block}.{layer}", []).append(
                (third, a, b)
            )
        out = {}
        for name, parts in fused.items():
            if parts[0][0] is None:  # a whole layer
                _, a, b = parts[0]
                out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = a, b
                continue
            parts.sort(key=lambda part: part[0])
            rows = parts[0][2].shape[0]
            down = torch.cat([a for _, a, _ in parts])
            up = torch.zeros(3 * rows, down.shape[0], dtype=down.dtype)
            column = 0
            for third, a, b in parts:
                up[third * rows : (third + 1) * rows, column : column + a.shape[0]] = b
                column += a.shape[0]
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = down, up.contiguous()
        return out
