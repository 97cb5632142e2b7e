"""HunyuanVideo 1.5 (8.3 B) from its diffusers folder.

Built on diffusers' own classes: ``HunyuanVideo15Transformer3DModel`` (the denoiser, in the
interface's ``unet`` slot), ``AutoencoderKLHunyuanVideo15`` (``4n + 1`` frames become
``n + 1`` latent frames, 16x smaller), two text encoders, Qwen2.5-VL's language model (the
prompt, in a chat template whose first 108 tokens are cropped) and ByT5 (only the text a
prompt quotes, for glyphs), and flow-match Euler over ``linspace(1, 0)`` noise levels, as
``HunyuanVideo15Pipeline``. Text to video gives the transformer zero condition latents, a
zero mask channel and zero image embeddings.

The interface's one context tensor holds both encoders' states: ``tokenize`` puts the
Qwen ids and the ByT5 ids of a prompt side by side (the ByT5 part ``-1`` where the prompt
quotes nothing), and ``encode_text`` returns ``[b, L + L2, D + 1]``: the Qwen states, then
the ByT5 states, each zero-padded to the wider of the two, with their attention mask as the
last channel; ``predict`` takes them apart again.

Training is flow matching (``models.flow``) with the scheduler's shift; a learnt token
lives in Qwen's vocabulary (ByT5 reads only quoted text).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults, is_pipeline_folder, load_pipeline
from .flow import FlowMatchingTraining, scheduler_config
from .hunyuan15_lora import HunyuanVideo15LoraNaming
from .samplers import FlowMatchingSampler

#: the pipeline's prompt template: its system message, cropped after encoding
CROP_START = 108
TEXT_LENGTH = 1000
GLYPH_LENGTH = 256
VISION_TOKENS = 729


class HunyuanVideo15Model(FlowMatchingTraining, BaseVideoModel):
    """A HunyuanVideo 1.5 text-to-video model behind the base-model interface."""

    denoiser_name = "transformer"
    batch_guidance = False  # as the pipeline's guider: the two branches as two calls
    has_start_token = False  # (the template's tokens are cropped)
    spatial_block_pattern = r"transformer_blocks\.\d+"
    cache_training_inputs = True  # the Qwen2.5-VL language model alone is 7 B parameters
    train_frames = 1  # a photo as one latent frame, as the model saw images
    lora_naming = HunyuanVideo15LoraNaming()
    #: the presets' self- (attn1) and cross-attention (attn2) projections in a double-stream
    #: block, where video and text tokens attend jointly: the video tokens' queries, keys
    #: and values are their self-attention and their cross-attention's query; the text
    #: tokens' keys and values are the cross-attention's (the text stream's own queries and
    #: layers are not the paper's)
    preset_names = {
        "attn1.to_q": "attn.to_q",
        "attn1.to_k": "attn.to_k",
        "attn1.to_v": "attn.to_v",
        "attn1.to_out.0": "attn.to_out.0",
        "attn2.to_q": "attn.to_q",
        "attn2.to_k": "attn.add_k_proj",
        "attn2.to_v": "attn.add_v_proj",
        "attn2.to_out.0": "attn.to_out.0",
    }

    def __init__(self, name, transformer, vae, text_encoder, tokenizer, text_encoder_2,
                 tokenizer_2, scheduler_config: dict, guidance_scale: float,
                 system_message: str, defaults: ModelDefaults | None = None):  # fmt: skip
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.scheduler_config = dict(scheduler_config)
        self.system_message = system_message
        if defaults is None:
            defaults = _defaults(transformer, guidance_scale)
        super().__init__(name, transformer, vae, text_encoder, tokenizer, defaults)
        # decoded in 256-pixel tiles, as diffusers' example does: whole, 121 frames at 848x480
        # would take ~88 GB (the plan's estimate); a video smaller than a tile is not tiled
        vae.enable_tiling()
        self.vae_scale_factor = int(vae.spatial_compression_ratio)
        self.vae_scale_factor_temporal = int(vae.temporal_compression_ratio)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype | None = None):
        pipe = load_pipeline("HunyuanVideo15Pipeline", name_or_path, torch_dtype,
                             "HunyuanVideo 1.5",
                             "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v")  # fmt: skip
        return cls.from_pipeline(pipe, str(name_or_path))

    @classmethod
    def from_pipeline(cls, pipe, name: str = "hunyuan15", defaults: ModelDefaults | None = None):
        """Take the components of a diffusers ``HunyuanVideo15Pipeline``."""
        return cls(name, pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                   pipe.text_encoder_2, pipe.tokenizer_2,
                   scheduler_config(pipe.scheduler),
                   float(pipe.guider.guidance_scale), pipe.system_message, defaults)  # fmt: skip

    def to_pipeline(self):
        """A diffusers ``HunyuanVideo15Pipeline`` on the same component objects."""
        from diffusers import HunyuanVideo15Pipeline
        from diffusers.guiders import ClassifierFreeGuidance

        return HunyuanVideo15Pipeline(
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            transformer=self.unet,
            vae=self.vae,
            scheduler=self.make_scheduler(),
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            guider=ClassifierFreeGuidance(guidance_scale=self.defaults.guidance_scale),
        )

    def make_sampler(self, size: tuple[int, int, int] | None = None) -> FlowMatchingSampler:
        """Flow-match Euler over ``linspace(1, 0, N + 1)[:-1]``, as the pipeline."""
        return FlowMatchingSampler(
            self.make_scheduler(), sigmas=lambda n: np.linspace(1.0, 0.0, n + 1)[:-1]
        )

    # --- text ---------------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return TEXT_LENGTH + CROP_START + GLYPH_LENGTH

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """``[b, 1108 + 256]``: the chat-template ids of each prompt, then the ByT5 ids of
        the text it quotes (``-1``: it quotes none)."""
        from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import (
            extract_glyph_texts,
            format_text_input,
        )

        chats = format_text_input(list(prompts), self.system_message)
        ids = self.tokenizer.apply_chat_template(
            chats, add_generation_prompt=True, tokenize=True, return_dict=True,
            padding="max_length", max_length=TEXT_LENGTH + CROP_START, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip
        glyphs = torch.full((len(prompts), GLYPH_LENGTH), -1, dtype=ids.dtype)
        for i, prompt in enumerate(prompts):
            text = extract_glyph_texts(prompt)
            if text is not None:
                glyphs[i] = self.tokenizer_2(
                    text, padding="max_length", max_length=GLYPH_LENGTH, truncation=True,
                    add_special_tokens=True, return_tensors="pt",
                ).input_ids[0]  # fmt: skip
        return torch.cat([ids, glyphs], dim=1)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The packed context (module docstring): Qwen's third-last hidden states after the
        template, and ByT5's states of the quoted text (zero where there is none)."""
        ids = input_ids.to(self.device)
        text_ids, glyph_ids = ids[:, : TEXT_LENGTH + CROP_START], ids[:, TEXT_LENGTH + CROP_START :]
        mask = text_ids.ne(self.tokenizer.pad_token_id).long()
        hidden = self.text_encoder(
            input_ids=text_ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states[-3][:, CROP_START:]
        mask = mask[:, CROP_START:]
        d2 = self.text_encoder_2.config.d_model
        glyph = torch.zeros(ids.shape[0], GLYPH_LENGTH, d2, device=ids.device, dtype=hidden.dtype)
        glyph_mask = torch.zeros(ids.shape[0], GLYPH_LENGTH, device=ids.device, dtype=torch.long)
        quoted = glyph_ids[:, 0].ge(0)
        if quoted.any():
            g = glyph_ids[quoted]
            g_mask = g.ne(self.tokenizer_2.pad_token_id).long()
            glyph[quoted] = self.text_encoder_2(input_ids=g, attention_mask=g_mask.float())[0].to(
                hidden.dtype
            )
            glyph_mask[quoted] = g_mask
        packed = hidden.new_zeros(
            ids.shape[0], hidden.shape[1] + GLYPH_LENGTH, self.context_width()
        )
        packed[:, : hidden.shape[1], : hidden.shape[-1]] = hidden
        packed[:, hidden.shape[1] :, :d2] = glyph
        packed[:, : hidden.shape[1], -1] = mask.to(packed.dtype)
        packed[:, hidden.shape[1] :, -1] = glyph_mask.to(packed.dtype)
        return packed

    def context_width(self) -> int:
        return max(self.text_encoder.config.hidden_size, self.text_encoder_2.config.d_model) + 1

    def _unpack(self, context: torch.Tensor):
        length = context.shape[1] - GLYPH_LENGTH
        d1 = self.unet.config.text_embed_dim
        d2 = self.unet.config.text_embed_2_dim
        return (context[:, :length, :d1], context[:, :length, -1],
                context[:, length:, :d2], context[:, length:, -1])  # fmt: skip

    # --- video <-> latents ----------------------------------------------------------------
    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple:
        if (num_frames - 1) % self.vae_scale_factor_temporal:
            raise UserError(
                f"HunyuanVideo 1.5 takes 4n+1 frames (1, 5, 9, ..., 121), got {num_frames}"
            )
        f = self.vae_scale_factor
        if height % f or width % f:
            raise UserError(
                f"height and width must be multiples of {f} for HunyuanVideo 1.5, "
                f"got {height}x{width}"
            )
        frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        channels = int(self.vae.config.latent_channels)
        return (batch, channels, frames, height // f, width // f)

    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None):
        mean, std = self.latent_distribution(video)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    def latent_distribution(self, video: torch.Tensor):
        video = video.to(device=self.device, dtype=self.vae.dtype)
        dist = self.vae.encode(video).latent_dist
        scale = self.vae.config.scaling_factor
        return dist.mean * scale, dist.std * scale

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(device=self.device, dtype=self.vae.dtype)
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    # --- denoiser ------------------------------------------------------------------------
    def predict(self, latents, timesteps, context, fps):
        model = self.unet
        dtype = model.dtype
        b, c, f, h, w = latents.shape
        condition = torch.zeros(b, c + 1, f, h, w, device=latents.device, dtype=dtype)
        hidden = torch.cat([latents.to(dtype), condition], dim=1)
        text, mask, glyph, glyph_mask = self._unpack(context.to(dtype))
        images = torch.zeros(b, VISION_TOKENS, model.config.image_embed_dim,
                             device=latents.device, dtype=dtype)  # fmt: skip
        return model(
            hidden_states=hidden,
            image_embeds=images,
            timestep=timesteps.to(dtype),
            encoder_hidden_states=text,
            encoder_attention_mask=mask,
            encoder_hidden_states_2=glyph,
            encoder_attention_mask_2=glyph_mask,
            return_dict=False,
        )[0]

    def checkpoint_blocks(self):
        return list(self.unet.transformer_blocks)

    def _components(self) -> tuple[nn.Module, ...]:
        return (self.text_encoder, self.text_encoder_2, self.unet, self.vae)


def _defaults(transformer, guidance_scale: float) -> ModelDefaults:
    """The pipeline's defaults: 121 frames at 24 fps, 50 steps, its guider's scale, and the
    16:9 size of the transformer's target size (848x480 for the 480p releases)."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    target = int(transformer.config.target_size)
    height, width = HunyuanVideo15ImageProcessor(
        vae_scale_factor=16
    ).calculate_default_height_width(9, 16, target)
    return ModelDefaults(
        num_frames=121,
        height=int(height),
        width=int(width),
        fps=24,
        num_inference_steps=50,
        guidance_scale=guidance_scale,
        negative_prompt="",
    )


def is_hunyuan15_folder(path) -> bool:
    """Whether ``path`` is a diffusers folder whose pipeline is HunyuanVideo 1.5's."""
    return is_pipeline_folder(path, "HunyuanVideo15")


# --- tiny HunyuanVideo 1.5 built in code (tests, offline smoke runs) ---------------------------


def build_tiny_qwen_tokenizer():
    """A Qwen-style tokenizer made in code: one token a printable character, Qwen's
    ``<|im_start|>`` / ``<|im_end|>`` / ``<|endoftext|>`` (padding), and its chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "\n"):
        vocab[token] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def build_tiny_hunyuan15_pipeline(seed: int = 0):
    """A random ``HunyuanVideo15Pipeline`` of the real classes at toy sizes (a 3-layer
    Qwen2.5-VL language model, a 1-layer ByT5, a 16x VAE with 4 latent channels, a 1-block
    transformer), the same weights for the same ``seed``."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = build_tiny_qwen_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
            max_position_embeddings=2048, bos_token_id=None, eos_token_id=None,
        ))  # fmt: skip
        glyph_encoder = T5EncoderModel(
            T5Config(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        )
        vae = AutoencoderKLHunyuanVideo15(
            latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1
        )
        transformer = HunyuanVideo15Transformer3DModel(
            in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8,
            num_layers=1, num_refiner_layers=1, text_embed_dim=32, text_embed_2_dim=16,
            image_embed_dim=16, rope_axes_dim=(2, 2, 4), target_size=64, task_type="t2v",
        )  # fmt: skip
    for module in (text_encoder, glyph_encoder, vae, transformer):
        module.eval()  # as from_pretrained gives them (ByT5's dropout is on in training mode)
    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=glyph_encoder,
        tokenizer_2=ByT5Tokenizer(),
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )


def build_tiny_hunyuan15(seed: int = 0) -> HunyuanVideo15Model:
    """``tiny-hunyuan15``: the tiny pipeline's components behind the interface, sampling
    5 frames at 32x32 in 4 steps by default."""
    model = HunyuanVideo15Model.from_pipeline(build_tiny_hunyuan15_pipeline(seed), "tiny-hunyuan15")
    model.defaults = ModelDefaults(num_frames=5, height=32, width=32, fps=8,
                                   num_inference_steps=4, guidance_scale=6.0)  # fmt: skip
    return model
