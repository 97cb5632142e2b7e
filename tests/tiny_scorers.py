"""Tiny randomly initialised CLIP and ViT models built in code (no downloads), for the
metric and benchmark tests. Callers seed torch first."""

import tempfile
from pathlib import Path

from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from customcrafter.models.diffusers_t2v import _tiny_clip_tokenizer

SIDE = 32  # the tiny models' input size
_SIZES = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4)


def tiny_clip(layers: int = 2):
    """``(CLIPModel, CLIPImageProcessor, CLIPTokenizer)``."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_clip_tokenizer(Path(tmp))
    text = dict(
        _SIZES,
        vocab_size=len(tokenizer),
        num_hidden_layers=layers,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(_SIZES, num_hidden_layers=layers, image_size=SIDE, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    return model, processor, tokenizer


def tiny_vit(layers: int = 2):
    """``(ViTModel, ViTImageProcessor)``, standing in for DINO."""
    config = ViTConfig(**_SIZES, num_hidden_layers=layers, image_size=SIDE, patch_size=8)
    return ViTModel(config), ViTImageProcessor(size={"height": SIDE, "width": SIDE})
