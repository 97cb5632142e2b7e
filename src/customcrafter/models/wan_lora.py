"""How other tools name a Wan subject module's layers in their LoRA files.

- ``comfyui``: the original Wan module names, ``diffusion_model.blocks.N.self_attn.q``
  (``k``, ``v``, ``o``), ``cross_attn.*``, ``ffn.0`` / ``ffn.2``, each with ``lora_A`` /
  ``lora_B`` weights and an ``alpha``: what ComfyUI's LoRA loader reads (diffusers'
  ``load_lora_weights`` converts it too).
- ``diffusers``: ``transformer.blocks.N.attn1.to_q.lora_A.weight``, ...: what
  ``WanPipeline.load_lora_weights`` reads.
"""

from __future__ import annotations

import re

import torch

#: the prefix of Wan 2.2 A14B's low-noise expert's (``transformer_2``) layers in subject files
LOW_NOISE_PREFIX = "transformer_2."

#: diffusers' names inside a Wan block -> the original Wan code's
_ORIGINAL = {
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
_TARGET = re.compile(r"blocks\.(\d+)\.(" + "|".join(map(re.escape, _ORIGINAL)) + r")")


class WanLoraNaming:
    """The ``models.base.LoraNaming`` of the Wan family."""

    family = "Wan"
    formats = ("comfyui", "diffusers")
    #: ``--expert`` -> the prefix its layers carry in subject files (A14B's two experts)
    experts = {"high": "", "low": LOW_NOISE_PREFIX}

    def owns(self, target: str) -> bool:
        """Whether ``target`` (a layer within its expert) has a name in this family."""
        return _TARGET.fullmatch(target) is not None

    def tensors(self, target: str, a, b, rank: int, format: str) -> dict[str, torch.Tensor]:
        """The entries of one layer's LoRA (``a`` ``[r, in]``, ``b`` ``[out, r]``, its scale
        already in ``b``) in a ``format`` file."""
        if format == "diffusers":
            return {
                f"transformer.{target}.lora_A.weight": a,
                f"transformer.{target}.lora_B.weight": b,
            }
        block, inner = _TARGET.fullmatch(target).groups()
        name = f"diffusion_model.blocks.{block}.{_ORIGINAL[inner]}"
        return {
            f"{name}.lora_A.weight": a,
            f"{name}.lora_B.weight": b,
            f"{name}.alpha": torch.tensor(float(rank)),
        }
