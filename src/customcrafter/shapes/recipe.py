"""The recipe of the shapes model: every setting of ``customcrafter shapes train-base``.

The defaults are the recipe of the weights that ship; ``docs/results/shapes-base.md`` tells
how each was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class BaseRecipe:
    """Everything that defines a shapes-model training run."""

    seed: int = field(default=0, metadata=_help("seed of the weights, the data and the noise"))
    vae_steps: int = field(default=800, metadata=_help("VAE training steps"))
    vae_batch_size: int = field(default=64, metadata=_help("frames per VAE step"))
    vae_learning_rate: float = field(default=1e-3, metadata=_help("VAE learning rate (AdamW)"))
    vae_kl_weight: float = field(default=1e-5, metadata=_help("weight of the VAE's KL term"))
    pool_size: int = field(
        default=16384, metadata=_help("clips encoded once for the diffusion stage")
    )
    steps: int = field(default=2000, metadata=_help("UNet training steps"))
    batch_size: int = field(default=32, metadata=_help("clips per UNet step"))
    learning_rate: float = field(default=1e-3, metadata=_help("peak UNet learning rate"))
    warmup_steps: int = field(default=200, metadata=_help("linear learning-rate warm-up"))
    final_lr_fraction: float = field(
        default=0.1, metadata=_help("where the cosine decay ends, as a share of the peak")
    )
    ema_decay: float = field(
        default=0.999, metadata=_help("decay of the weight average that is exported")
    )
    caption_dropout: float = field(
        default=0.1, metadata=_help("share of empty captions (classifier-free guidance)")
    )
    train_text_encoder: bool = field(
        default=False,
        metadata=_help("train the text tower too (frozen, as VideoCrafter2 keeps OpenCLIP)"),
    )
    temporal_cross_attention: bool = field(
        default=True,
        metadata=_help("the temporal transformers also attend to the prompt"),
    )
    color_dropout: float = field(
        default=0.2,
        metadata=_help("share of captions without the object's color (class-word prompts)"),
    )
    high_noise_share: float = field(
        default=0.5,
        metadata=_help("share of timesteps from the noisiest third, where motion is decided"),
    )
    latent_size: int = field(
        default=8,
        metadata=_help(
            "latent frame size: 8 (ships) or 16 (one VAE down block fewer, one UNet level"
            " more; about 3x the UNet cost per step)"
        ),
    )
    checkpoint_every: int = field(default=250, metadata=_help("steps between saved states"))

    def __post_init__(self) -> None:
        if self.latent_size not in (8, 16):
            raise UserError(f"latent_size is 8 or 16 (got {self.latent_size})")
        for name in ("caption_dropout", "color_dropout", "high_noise_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(
                    f"{name} is a probability, between 0 and 1 (got {getattr(self, name)})"
                )
