"""The shapes model: a small VideoCrafter2-architecture model trained by this project.

It is the same code as the paper's base model at a small size: a ``VC2UNet`` (spatial and
temporal transformers, temporal convolutions, fps conditioning), a diffusers
``AutoencoderKL`` (32x32 frames to 8x8x4 latents), an OpenCLIP-style text tower with a
word-level tokenizer that takes new tokens, and VideoCrafter2's noise schedule with its
signal scaling (with a larger final beta, see ``SCHEDULE_CONFIG``). It is trained on the
shapes world (``customcrafter shapes train-base``) and its weights ship with the package in
the converted-folder format, so ``--base shapes`` loads it like any converted checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..errors import UserError
from .base import ModelDefaults
from .openclip_text import OpenCLIPTextConfig, OpenCLIPTextEncoder
from .vc2_schedule import VC2NoiseSchedule
from .vc2_unet import VC2UNet, VC2UNetConfig

#: where the trained weights ship inside the package
SHAPES_WEIGHTS = Path(__file__).resolve().parent.parent / "shapes" / "weights"
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
    # VideoCrafter2's temporal attention has no position encoding: its temporal
    # convolutions are what tell frame 1 from frame 8. Without them the UNet treats a clip
    # as an unordered set of frames and cannot say "left" from "right".
    temporal_conv=True,
    temporal_conv_dropout=0.0,
    # With the convolutions alone this small UNet's prediction from pure noise is the same
    # for every motion word. Frame positions in the temporal attention give it the frame
    # index that a drift needs.
    temporal_position_encoding=True,
    # The temporal transformers also cross-attend to the prompt (VideoCrafter's
    # ``temporal_selfatt_only: false``): the frame index and the motion word meet in one
    # layer. With it (and a frozen text tower) the motion words steer the clip, if not yet
    # reliably (docs/results/shapes-base.md).
    temporal_selfatt_only=False,
)
#: VideoCrafter2's schedule with two changes.
#: - A larger final beta. At 8x8 latents the background color is the mean of 64
#:   positions, 8x less noisy than one position: with the original 0.012 its
#:   signal-to-noise ratio is still 0.15 at the last training step, and only the top 18%
#:   of timesteps decide it; 0.02 brings that ratio to 0.007 and gives the layout the top
#:   third of the schedule.
#: - v-prediction. At high noise, where the layout of a clip is decided, an eps loss
#:   weighs errors in the clean clip by the signal-to-noise ratio (under 0.01 there); the
#:   v loss weighs them by 1 + SNR. With it (and the frame positions) color and background
#:   are exact on held-out captions (docs/results/shapes-base.md).
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


def build_shapes_model(seed: int = 0, unet_config: VC2UNetConfig | None = None):
    """The shapes model with random weights (what ``train-base`` starts from); the UNet is
    ``UNET_CONFIG`` unless ``unet_config`` is given."""
    from ..shapes.world import vocabulary
    from .videocrafter2 import VideoCrafter2Model

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocabulary())
    unet = VC2UNet(unet_config or UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
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


def load_shapes_model(folder: str | Path | None = None):
    """The trained shapes model (by default the one shipped with the package)."""
    from .vc2_convert import is_converted
    from .videocrafter2 import VideoCrafter2Model

    folder = Path(folder) if folder else SHAPES_WEIGHTS
    if not is_converted(folder):
        raise UserError(
            f"no trained shapes model in {folder}; train one with "
            "'customcrafter shapes train-base --out DIR' and pass --base DIR"
        )
    model = VideoCrafter2Model.from_converted(folder)
    model.vae_chunk_size = VAE_CHUNK_SIZE
    if folder == SHAPES_WEIGHTS:
        model.name = "shapes"
    return model
