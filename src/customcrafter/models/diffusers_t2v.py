"""diffusers' ``UNet3DConditionModel`` family: ModelScope text-to-video, Zeroscope, and tiny
randomly initialised instances of the same classes for tests and the offline demo.

A model folder (or hub id) has the usual diffusers layout: ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/`` and ``scheduler/``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet3DConditionModel
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults, vae_scale_factor

# Spatial transformer blocks of the diffusers 3D UNet. Temporal attention lives under
# ``temp_attentions.*`` and ``transformer_in.*`` and never matches.
SPATIAL_BLOCK_PATTERN = (
    r"(down_blocks|up_blocks)\.\d+\.attentions\.\d+\.transformer_blocks\.\d+"
    r"|mid_block\.attentions\.\d+\.transformer_blocks\.\d+"
)

_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class DiffusersT2VModel(BaseVideoModel):
    """A diffusers 3D-UNet text-to-video model (eps or v prediction, DDIM sampling)."""

    spatial_block_pattern = SPATIAL_BLOCK_PATTERN

    def __init__(
        self,
        name: str,
        unet: UNet3DConditionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer,
        scheduler_config: dict,
        defaults: ModelDefaults | None = None,
        vae_chunk_size: int = 8,
    ):
        self.scheduler_config = dict(scheduler_config)
        # the training schedule: the same betas the sampler uses
        self.noise_schedule = DDPMScheduler.from_config(self.scheduler_config)
        if defaults is None:
            side = int(unet.config.sample_size) * vae_scale_factor(vae)
            defaults = ModelDefaults(num_frames=16, height=side, width=side, fps=8)
        super().__init__(name, unet, vae, text_encoder, tokenizer, defaults, vae_chunk_size)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, name_or_path: str, torch_dtype: torch.dtype | None = None
    ) -> DiffusersT2VModel:
        """Load from a local folder or a hub id (with the model in the local hub cache)."""
        path = Path(name_or_path)
        if path.exists():
            missing = [c for c in _COMPONENTS if not (path / c).is_dir()]
            if missing:
                raise UserError(
                    f"{path} is not a diffusers text-to-video model folder: missing "
                    f"{', '.join(m + '/' for m in missing)}"
                )
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        try:
            unet = UNet3DConditionModel.from_pretrained(name_or_path, subfolder="unet", **kwargs)
            vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(
                name_or_path, subfolder="text_encoder", **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
            scheduler_config = DDIMScheduler.load_config(name_or_path, subfolder="scheduler")
        except (OSError, ValueError) as exc:  # missing files, bad ids, offline hub
            raise UserError(
                f"could not load the diffusers model {name_or_path!r}: {exc}\n"
                "Give a local model folder, or a hub id that is in your Hugging Face cache."
            ) from exc
        defaults = None
        defaults_file = path / "customcrafter_defaults.json"
        if defaults_file.is_file():
            defaults = ModelDefaults(**json.loads(defaults_file.read_text()))
        return cls(
            str(name_or_path), unet, vae, text_encoder, tokenizer, scheduler_config, defaults
        )

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the diffusers folder layout (used to test the loader and to ship models)."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        DDIMScheduler.from_config(self.scheduler_config).save_pretrained(folder / "scheduler")
        (folder / "customcrafter_defaults.json").write_text(json.dumps(self.defaults.__dict__))

    # --- text ---------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.to(self.device))[0]

    # --- denoiser ------------------------------------------------------------------------
    def predict(self, latents, timesteps, context, fps):
        return self.unet(latents, timesteps, encoder_hidden_states=context).sample

    def checkpoint_blocks(self):
        unet = self.unet
        return [*unet.down_blocks, unet.mid_block, *unet.up_blocks]

    # --- noise schedule ------------------------------------------------------------------
    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_schedule.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return self.noise_schedule.config.prediction_type

    def add_noise(self, x0, noise, timesteps):
        return self.noise_schedule.add_noise(x0, noise, timesteps)

    def training_target(self, x0, noise, timesteps):
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_schedule.get_velocity(x0, noise, timesteps)
        raise UserError(f"unsupported prediction type {self.prediction_type!r}")


# --- tiny models built in code --------------------------------------------------------------

TINY_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _tiny_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A real CLIP BPE tokenizer with a byte-level vocabulary and no merges: every word is
    split into characters, which is all a tiny random text encoder needs."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def build_tiny_t2v(
    seed: int = 0, width: int = 32, num_frames: int = 8, channels: int = 32
) -> DiffusersT2VModel:
    """A randomly initialised model of the ModelScope architecture, small enough for a CPU
    test (about 0.5 M parameters). Its outputs are noise: it exists to exercise code."""
    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        sample_size=width // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(channels, channels),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=width,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_clip_tokenizer(Path(tmp))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    defaults = ModelDefaults(num_frames=num_frames, height=width, width=width, fps=8)
    return DiffusersT2VModel(
        "tiny", unet, vae, text_encoder, tokenizer, TINY_SCHEDULER_CONFIG, defaults
    )
