"""The shapes model: a small VideoCrafter2-architecture model trained by this project.

It is the same code as the paper's base model at a small size: a ``VC2UNet`` (spatial and
temporal transformers, temporal convolutions, fps conditioning), a diffusers
``AutoencoderKL`` (32x32 frames to 8x8x4 latents), an OpenCLIP-style text tower with a
word-level tokenizer that takes new tokens, and VideoCrafter2's noise schedule with its
signal scaling. ``customcrafter shapes train-base`` trains it; its weights ship with the
package in the converted-folder format and load as ``--base shapes``. Why each setting
differs from VideoCrafter2's: ``docs/results/shapes-base.md``.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import AutoencoderKL

from ..models.base import ModelDefaults
from ..models.videocrafter2 import VideoCrafter2Model
from ..models.videocrafter2.schedule import VC2NoiseSchedule
from ..models.videocrafter2.text import OpenCLIPTextConfig, OpenCLIPTextEncoder
from ..models.videocrafter2.unet import VC2UNet, VC2UNetConfig
from .world import vocabulary

#: words the tokenizer knows besides the world's vocabulary (prompt templates)
EXTRA_WORDS = ("video", "of", "static", "photo", "the", "with", "and")
PAD, UNK = "[PAD]", "[UNK]"

UNET_CONFIG = VC2UNetConfig(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    attention_resolutions=(1, 2),
    num_res_blocks=1,
    channel_mult=(1, 2),
    num_head_channels=16,
    context_dim=64,
    temporal_length=8,
    temporal_conv=True,
    temporal_conv_dropout=0.0,
    # frame order needs more than the temporal convolutions' zero padding at this size
    temporal_position_encoding=True,
    # the frame index and the motion word meet in the temporal transformers
    temporal_selfatt_only=False,
)
#: VideoCrafter2's schedule with a larger final beta (the 8x8 latents' mean is 8x less noisy
#: than one position: 0.02 gives the layout the top third of the schedule) and v-prediction
#: (an eps loss hardly weighs the clean clip at high noise, where the layout is decided)
SCHEDULE_CONFIG = {"linear_end": 0.02, "parameterization": "v"}
#: frames per VAE call (the frames are 32x32)
VAE_CHUNK_SIZE = 256
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
    "scaling_factor": 1.0,  # set from the data after the VAE is trained
}
#: the latent sizes the recipe offers (``--latent-size``): 8 ships; 16 keeps an object and
#: its path twice as many latent pixels wide, at about 3x the UNet's cost per step
LATENT_SIZES = (8, 16)


def vae_config(latent_size: int = 8) -> dict:
    """The VAE for 32x32 frames to ``latent_size`` squared latents (8: ``VAE_CONFIG``;
    16: one down block fewer)."""
    if latent_size == 8:
        return dict(VAE_CONFIG)
    if latent_size == 16:
        return {
            **VAE_CONFIG,
            "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2,
            "block_out_channels": [32, 64],
        }
    raise ValueError(f"latent size {latent_size} is not one of {LATENT_SIZES}")


def unet_config_for(latent_size: int = 8) -> VC2UNetConfig:
    """``UNET_CONFIG``, with one more level for 16x16 latents (attention from 8x8 down, as
    at the shipped size, so the added cost is the 16x16 convolutions)."""
    if latent_size == 8:
        return UNET_CONFIG
    if latent_size == 16:
        return dataclasses.replace(
            UNET_CONFIG, channel_mult=(1, 2, 2), attention_resolutions=(2, 4)
        )
    raise ValueError(f"latent size {latent_size} is not one of {LATENT_SIZES}")


TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS, CONTEXT_LENGTH = 64, 2, 4, 16
SHAPES_DEFAULTS = ModelDefaults(
    num_frames=8,
    height=32,
    width=32,
    fps=8,
    num_inference_steps=50,
    guidance_scale=5.0,
    eta=1.0,
    negative_prompt="",
)


def build_tokenizer(words: list[str]):
    """A word-level tokenizer over ``words`` (``[PAD]`` is id 0, as open_clip pads), padded
    to ``CONTEXT_LENGTH``; ``add_tokens`` works as for any transformers tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, UNK: 1}
    for word in [*words, *EXTRA_WORDS]:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=CONTEXT_LENGTH,
    )


def build_shapes_model(
    seed: int = 0, unet_config: VC2UNetConfig | None = None, vae: dict | None = None
):
    """The shapes model with random weights (what ``train-base`` starts from); the UNet is
    ``UNET_CONFIG`` and the VAE ``VAE_CONFIG`` unless others are given."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocabulary())
    unet = VC2UNet(unet_config or UNET_CONFIG)
    vae = AutoencoderKL(**(vae or VAE_CONFIG))
    text_encoder = OpenCLIPTextEncoder(
        OpenCLIPTextConfig(
            vocab_size=len(tokenizer),
            context_length=CONTEXT_LENGTH,
            width=TEXT_WIDTH,
            heads=TEXT_HEADS,
            layers=TEXT_LAYERS,
            output_layer="last",
        )
    )
    return VideoCrafter2Model(
        "shapes",
        unet,
        vae,
        text_encoder,
        tokenizer,
        VC2NoiseSchedule(**SCHEDULE_CONFIG),
        SHAPES_DEFAULTS,
        vae_chunk_size=VAE_CHUNK_SIZE,
    )
