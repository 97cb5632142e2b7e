"""The recipe of the shapes model: every setting of ``customcrafter shapes train-base``.

The defaults are the recipe of the weights that ship; ``docs/results/shapes-base.md`` tells
how each was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SEED, check_bounds, setting
from ..errors import UserError

#: the range of step counts, batch sizes and pools (beyond it a run would not end)
_COUNT = {"minimum": 1, "maximum": 10_000_000}
_RATE = {"above": 0.0, "maximum": 1.0}


@dataclass
class BaseRecipe:
    """Everything that defines a shapes-model training run."""

    seed: int = setting(0, help="seed of the weights, the data and the noise", **SEED)
    vae_steps: int = setting(800, help="VAE training steps", **_COUNT)
    vae_batch_size: int = setting(64, help="frames per VAE step", minimum=1, maximum=4096)
    vae_learning_rate: float = setting(1e-3, help="VAE learning rate (AdamW)", **_RATE)
    vae_kl_weight: float = setting(
        1e-5, help="weight of the VAE's KL term", minimum=0.0, maximum=1.0
    )
    pool_size: int = setting(
        16384, help="clips encoded once for the diffusion stage", minimum=1, maximum=1_000_000
    )
    steps: int = setting(2000, help="UNet training steps", **_COUNT)
    batch_size: int = setting(32, help="clips per UNet step", minimum=1, maximum=4096)
    learning_rate: float = setting(1e-3, help="peak UNet learning rate", **_RATE)
    warmup_steps: int = setting(
        200, help="linear learning-rate warm-up", minimum=0, maximum=10_000_000
    )
    final_lr_fraction: float = setting(
        0.1,
        help="where the cosine decay ends, as a share of the peak",
        minimum=0.0,
        maximum=1.0,
    )
    ema_decay: float = setting(
        0.999, help="decay of the weight average that is exported", minimum=0.0, below=1.0
    )
    caption_dropout: float = setting(0.1, help="share of empty captions (classifier-free guidance)")
    train_text_encoder: bool = setting(
        False, help="train the text tower too (frozen, as VideoCrafter2 keeps OpenCLIP)"
    )
    temporal_cross_attention: bool = setting(
        True, help="the temporal transformers also attend to the prompt"
    )
    color_dropout: float = setting(
        0.2, help="share of captions without the object's color (class-word prompts)"
    )
    high_noise_share: float = setting(
        0.5, help="share of timesteps from the noisiest third, where motion is decided"
    )
    latent_size: int = setting(
        8,
        help="latent frame size: 8 (ships) or 16 (one VAE down block fewer, one UNet level "
        "more; about 3x the UNet cost per step)",
    )
    checkpoint_every: int = setting(250, help="steps between saved states", **_COUNT)

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.latent_size not in (8, 16):
            raise UserError(f"latent_size is 8 or 16 (got {self.latent_size})")
        for name in ("caption_dropout", "color_dropout", "high_noise_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(
                    f"{name} is a probability, between 0 and 1 (got {getattr(self, name)})"
                )
