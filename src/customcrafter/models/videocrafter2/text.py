"""The OpenCLIP ViT-H-14 text tower as VideoCrafter2 uses it.

VideoCrafter2 conditions its UNet on ``FrozenOpenCLIPEmbedder(layer="penultimate")``: token
embeddings plus learned positions go through the causal text transformer, the *last*
residual block is skipped, and ``ln_final`` is applied to the penultimate hidden states. The
pooled output, ``text_projection`` and ``logit_scale`` are never used for the context, but the
checkpoint stores them, so they are kept here as plain parameters to load it without
missing or unexpected keys.

Parameter names follow open_clip (``transformer.resblocks.N.attn.in_proj_weight`` and so
on), so the tensors under ``cond_stage_model.model.*`` load as they are; reading them off a
checkpoint is ``checkpoint.py``'s work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

__all__ = [
    "OPENCLIP_TOKENIZER",
    "OUTPUT_LAYERS",
    "OpenCLIPTextConfig",
    "OpenCLIPTextEncoder",
    "load_openclip_tokenizer",
]

# OpenCLIP ViT-H-14 uses OpenAI CLIP's BPE vocabulary; this hub repository ships it in the
# transformers format. Point $CUSTOMCRAFTER_OPENCLIP_TOKENIZER at a local copy to use another.
OPENCLIP_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
#: residual blocks skipped at the end of the tower, by output layer
OUTPUT_LAYERS = {"last": 0, "penultimate": 1}


@dataclass(frozen=True)
class OpenCLIPTextConfig:
    """Sizes of the text tower (defaults: ViT-H-14 as in VideoCrafter2)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 24
    mlp_ratio: float = 4.0
    #: ``"penultimate"`` skips the final residual block (VideoCrafter2), ``"last"`` runs all
    output_layer: str = "penultimate"

    def __post_init__(self) -> None:
        if self.output_layer not in OUTPUT_LAYERS:
            raise ValueError(
                f"output_layer must be one of {sorted(OUTPUT_LAYERS)}, got {self.output_layer!r}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.layers <= OUTPUT_LAYERS[self.output_layer]:
            raise ValueError(f"{self.layers} layers is too few for output {self.output_layer!r}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention holding ``nn.MultiheadAttention``'s parameter names.

    The packed ``in_proj_weight`` ``[3 * width, width]`` stacks the q, k and v projections in
    that order, exactly as ``nn.MultiheadAttention`` stores them, so open_clip checkpoints
    load unchanged.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, n, width]`` -> ``[b, n, width]``; position i sees positions <= i."""
        b, n, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # [b, n, 3 * width] -> three [b, heads, n, head_dim]
        q, k, v = qkv.view(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        # is_causal builds the same mask as open_clip's explicit upper-triangular -inf one
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, width))


class MLP(nn.Module):
    """``c_fc`` -> exact (erf) GELU -> ``c_proj``, open_clip's names."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(round(width * mlp_ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, n, width]`` -> ``[b, n, width]``."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The stack of residual blocks (a container, so keys read ``transformer.resblocks.N``)."""

    def __init__(self, width: int, heads: int, layers: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)
        )


class OpenCLIPTextEncoder(nn.Module):
    """Token ids ``[b, context_length]`` -> context ``[b, context_length, width]``.

    ``token_embedding`` is looked up through ``self.token_embedding(input_ids)`` so that the
    subject module can replace it with a wrapper (``set_input_embeddings``).
    """

    def __init__(self, config: OpenCLIPTextConfig | None = None):
        super().__init__()
        config = config or OpenCLIPTextConfig()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = Transformer(config.width, config.heads, config.layers, config.mlp_ratio)
        self.ln_final = nn.LayerNorm(config.width)
        # unused for the context; kept so the checkpoint loads without unexpected keys
        self.text_projection = nn.Parameter(torch.empty(config.width, config.width))
        self.logit_scale = nn.Parameter(torch.tensor(0.0))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=config.width**-0.5)

    @property
    def num_blocks_run(self) -> int:
        """How many residual blocks the forward pass runs (all but the skipped ones)."""
        return self.config.layers - OUTPUT_LAYERS[self.config.output_layer]

    def get_input_embeddings(self) -> nn.Module:
        return self.token_embedding

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.token_embedding = module

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` ``[b, n]`` (n <= context_length) -> ``[b, n, width]``."""
        n = input_ids.shape[1]
        if n > self.config.context_length:
            raise ValueError(f"{n} tokens exceed context length {self.config.context_length}")
        x = self.token_embedding(input_ids)
        x = x + self.positional_embedding[:n].to(x.dtype)
        for block in self.transformer.resblocks[: self.num_blocks_run]:
            x = block(x)
        return self.ln_final(x)


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
