"""Lightricks' LTX-2 (video with sound) from its diffusers folder.

Built on diffusers' own classes, as ``LTX2Pipeline`` puts them together:
``LTX2VideoTransformer3DModel`` (the denoiser, in the interface's ``unet`` slot: one stack of
blocks in which video tokens and audio tokens each attend to themselves and to the text, and
to each other), ``AutoencoderKLLTX2Video`` (``8n + 1`` frames become ``n + 1`` latent frames,
32x smaller, normalised by the VAE's per-channel mean and std), Gemma 3 (every layer's
hidden states) and ``LTX2TextConnectors`` (which turn them into a video context and an audio
context), ``AutoencoderKLLTX2Audio`` and the vocoder (latents -> mel spectrogram -> sound),
and flow-match Euler over ``linspace(1, 1/N)`` noise levels shifted by the video's token
count.

The video and its sound are denoised together, as the pipeline does. While sampling, the
sampler's state is their token sequences side by side: ``[b, video tokens + audio tokens,
c]`` (the video latents packed as the transformer reads them, then the audio latents; both
releases have 128 channels in each). Training sees photos, which have no sound: its latents
are the video's ``[b, c, f, h, w]``, the audio stream is given pure noise at the highest
noise level (nothing known about the sound, as at the first step of sampling) and only the
video's prediction is in the loss.

The interface's one context tensor holds both connector outputs and their mask:
``[b, L, video dim + audio dim + 1]``.

Guidance: plain classifier-free guidance by default, as on every other base. The pipeline's
own terms (spatio-temporal guidance, modality isolation, guidance rescale, separate audio
scales) are ``SampleConfig`` settings named as the pipeline's arguments; with the same
values the result is the pipeline's (``guide``).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
from torch import nn

from ..config import GUIDANCE_OPTIONS
from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults, is_pipeline_folder, load_pipeline
from .flow import FlowMatchingTraining, scheduler_config
from .samplers import FlowMatchingSampler

#: the negative prompt of diffusers' LTX-2 example
NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"


_LAYER = re.compile(
    r"transformer_blocks\.\d+\.(attn1|attn2|audio_attn1|audio_attn2|audio_to_video_attn|"
    r"video_to_audio_attn|ff|audio_ff)\..+"
)


class LTX2LoraNaming:
    """The ``models.base.LoraNaming`` of LTX-2. Its original checkpoints (and the LoRA files
    of Lightricks' trainer and ComfyUI) name a block's layers as diffusers does, under
    ``diffusion_model.`` (diffusers' ``_convert_non_diffusers_ltx2_lora_to_diffusers``
    renames only layers outside the blocks' attention and feed-forward):

    - ``comfyui``: ``diffusion_model.transformer_blocks.N.attn1.to_q.lora_A.weight``, ...
      (no ``alpha``: a loader then applies B as it is, which carries the scale);
    - ``diffusers``: ``transformer.transformer_blocks.N.attn1.to_q.lora_A.weight``, ...: what
      ``LTX2Pipeline.load_lora_weights`` reads.
    """

    family = "LTX-2"
    formats = ("comfyui", "diffusers")
    experts: dict[str, str] = {}

    def owns(self, target: str) -> bool:
        return _LAYER.fullmatch(target) is not None

    def tensors(self, target: str, a, b, rank: int, format: str) -> dict[str, torch.Tensor]:
        if format == "diffusers":
            return {
                f"transformer.{target}.lora_A.weight": a,
                f"transformer.{target}.lora_B.weight": b,
            }
        # no alpha entry (as the LTX-2 trainer's files): B carries the scale, and diffusers'
        # reader of this naming takes nothing else
        name = f"diffusion_model.{target}"
        return {f"{name}.lora_A.weight": a, f"{name}.lora_B.weight": b}


class LTX2Model(FlowMatchingTraining, BaseVideoModel):
    """An LTX-2 text-to-video-and-audio model behind the base-model interface."""

    denoiser_name = "transformer"
    has_start_token = False  # Gemma's prompts are padded on the left
    spatial_block_pattern = r"transformer_blocks\.\d+"
    cache_training_inputs = True  # Gemma 3 12B
    train_frames = 1  # a photo as one latent frame
    guidance_options = GUIDANCE_OPTIONS
    audio = True
    lora_naming = LTX2LoraNaming()

    def __init__(self, name, transformer, vae, audio_vae, vocoder, text_encoder, tokenizer,
                 connectors, scheduler_config: dict, defaults: ModelDefaults | None = None,
                 max_sequence_length: int = 1024):  # fmt: skip
        self.audio_vae = audio_vae
        self.vocoder = vocoder
        self.connectors = connectors
        self.scheduler_config = dict(scheduler_config)
        self.max_sequence_length = int(max_sequence_length)
        config = transformer.config
        if config.in_channels != config.audio_in_channels:
            raise UserError(
                f"this LTX-2 transformer reads {config.in_channels} video and "
                f"{config.audio_in_channels} audio channels; customcrafter samples both as one "
                "sequence and needs them equal (both releases have 128)"
            )
        #: whether each stream's cross-modal modulation reads the other stream's noise level:
        #: diffusers documents it as the LTX-2.3 behaviour and its absence as LTX-2.0's, so
        #: it follows the transformer's 2.3 features (the prompt modulation). Sampling gives
        #: both streams the same level, where it changes nothing; training gives the sound
        #: the highest level, where it does
        self.use_cross_timestep = bool(config.cross_attn_mod or config.audio_cross_attn_mod)
        #: the sizes of the video being sampled: (latent frames, height, width, audio frames)
        self._geometry: tuple[int, int, int, int] | None = None
        #: the video tokens of the clips last encoded (the training shift's sequence length)
        self._train_tokens: int | None = None
        super().__init__(name, transformer, vae, text_encoder, tokenizer,
                         defaults or _defaults())  # fmt: skip
        self.vae_scale_factor = int(vae.spatial_compression_ratio)
        self.vae_scale_factor_temporal = int(vae.temporal_compression_ratio)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype | None = None):
        pipe = load_pipeline("LTX2Pipeline", name_or_path, torch_dtype, "LTX-2", "Lightricks/LTX-2")
        return cls.from_pipeline(pipe, str(name_or_path))

    @classmethod
    def from_pipeline(cls, pipe, name: str = "ltx2", defaults: ModelDefaults | None = None,
                      max_sequence_length: int = 1024):  # fmt: skip
        """Take the components of a diffusers ``LTX2Pipeline``."""
        return cls(name, pipe.transformer, pipe.vae, pipe.audio_vae, pipe.vocoder,
                   pipe.text_encoder, pipe.tokenizer, pipe.connectors,
                   scheduler_config(pipe.scheduler), defaults, max_sequence_length)  # fmt: skip

    def to_pipeline(self):
        """A diffusers ``LTX2Pipeline`` on the same component objects."""
        from diffusers import LTX2Pipeline

        return LTX2Pipeline(
            scheduler=self.make_scheduler(),
            vae=self.vae,
            audio_vae=self.audio_vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            connectors=self.connectors,
            transformer=self.unet,
            vocoder=self.vocoder,
        )

    def make_sampler(self, size: tuple[int, int, int] | None = None) -> FlowMatchingSampler:
        """Flow-match Euler over ``linspace(1, 1/N, N)``, shifted by the video's token count
        at ``size`` (``(frames, height, width)``, the default size if not given), as the
        pipeline."""
        mu = None
        if self.scheduler_config.get("use_dynamic_shifting"):
            d = self.defaults
            frames, height, width = size or (d.num_frames, d.height, d.width)
            mu = self._mu(np.prod(self._grid(self.latent_shape(1, frames, height, width))))
        return FlowMatchingSampler(
            self.make_scheduler(), sigmas=lambda n: np.linspace(1.0, 1.0 / n, n), mu=mu
        )

    def _mu(self, tokens: int) -> float:
        """The pipeline's shift exponent for ``tokens`` video tokens (flux's rule)."""
        from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

        c = self.scheduler_config
        return float(calculate_shift(
            int(tokens), c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.95), c.get("max_shift", 2.05),
        ))  # fmt: skip

    @property
    def flow_shift(self) -> float:
        """Training's timestep shift: the sampler's at the size of the clips last encoded
        (``exp(mu)``; a fixed ``shift`` where the scheduler does not shift by size)."""
        if self.scheduler_config.get("use_dynamic_shifting") and self._train_tokens:
            return float(np.exp(self._mu(self._train_tokens)))
        return float(self.scheduler_config.get("shift", 1.0))

    # --- text ---------------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return self.max_sequence_length

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Gemma's ids, padded on the left (as the pipeline)."""
        tokenizer = self.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer(
            [p.strip() for p in prompts], padding="max_length", max_length=self.max_text_length,
            truncation=True, add_special_tokens=True, return_tensors="pt",
        ).input_ids  # fmt: skip

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every Gemma layer's states, through the connectors: the video context, the audio
        context and their mask as the last channel (module docstring)."""
        ids = input_ids.to(self.device)
        mask = ids.ne(self.tokenizer.pad_token_id).long()
        states = self.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = torch.stack(states.hidden_states, dim=-1).flatten(2, 3)
        hidden = hidden.to(self.text_encoder.dtype)
        video, audio, mask = self.connectors(hidden, mask, padding_side="left")
        mask = mask.to(video.dtype).unsqueeze(-1)
        return torch.cat([video, audio.to(video.dtype), mask], dim=-1)

    def _context_widths(self) -> tuple[int, int]:
        """The widths of the video and the audio context (the connectors' outputs)."""
        c = self.connectors.config
        return (c.video_connector_num_attention_heads * c.video_connector_attention_head_dim,
                c.audio_connector_num_attention_heads * c.audio_connector_attention_head_dim)  # fmt: skip

    def _unpack_context(self, context: torch.Tensor):
        video, audio = self._context_widths()
        return context[..., :video], context[..., video : video + audio], context[..., -1]

    def token_embedding(self) -> nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    def context_width(self) -> int:
        return sum(self._context_widths()) + 1

    # --- video <-> latents ----------------------------------------------------------------
    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple:
        t = self.vae_scale_factor_temporal
        if (num_frames - 1) % t:
            raise UserError(
                f"LTX-2 takes {t}n+1 frames (1, {t + 1}, {2 * t + 1}, ..., 121), got {num_frames}"
            )
        f = self.vae_scale_factor
        if height % f or width % f:
            raise UserError(
                f"height and width must be multiples of {f} for LTX-2, got {height}x{width}"
            )
        frames = (num_frames - 1) // t + 1
        return (batch, int(self.unet.config.in_channels), frames, height // f, width // f)

    def audio_frames(self, num_frames: int, fps: float) -> int:
        """Audio latent frames of a video of ``num_frames`` at ``fps`` (the pipeline's)."""
        config = self.audio_vae.config
        per_second = config.sample_rate / config.mel_hop_length
        per_second /= float(self.audio_vae.temporal_compression_ratio)
        return round(num_frames / fps * per_second)

    def initial_latents(self, batch, num_frames, height, width, fps, generator):
        """The video's noise, then the sound's, drawn as the pipeline draws them, packed side
        by side (module docstring); the sizes are kept for ``predict`` and the sampler."""
        shape = self.latent_shape(batch, num_frames, height, width)
        video = self._pack(torch.randn(shape, generator=generator))
        audio_frames = self.audio_frames(num_frames, fps)
        mel = self.audio_vae.config.mel_bins // self.audio_vae.mel_compression_ratio
        audio = torch.randn(
            (batch, self.audio_vae.config.latent_channels, audio_frames, mel), generator=generator
        )
        audio = _packing()._pack_audio_latents(audio)
        self._geometry = (*self._grid(shape), audio_frames)
        return torch.cat([video, audio], dim=1)

    def _latent_stats(self, like: torch.Tensor):
        shape = (1, -1, 1, 1, 1)
        mean = self.vae.latents_mean.view(shape).to(like.device, like.dtype)
        std = self.vae.latents_std.view(shape).to(like.device, like.dtype)
        return mean, std / self.vae.config.scaling_factor

    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None):
        mean, std = self.latent_distribution(video)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    def latent_distribution(self, video: torch.Tensor):
        self.latent_shape(1, video.shape[2], video.shape[3], video.shape[4])  # checks
        video = video.to(device=self.device, dtype=self.vae.dtype)
        dist = self.vae.encode(video).latent_dist
        mean, std = self._latent_stats(dist.mean)
        self._train_tokens = int(np.prod(self._grid(dist.mean.shape)))
        return (dist.mean - mean) / std, dist.std / std

    def _grid(self, shape) -> tuple[int, int, int]:
        """The transformer's token grid (frames, height, width) of latents of ``shape``."""
        c = self.unet.config
        return shape[-3] // c.patch_size_t, shape[-2] // c.patch_size, shape[-1] // c.patch_size

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        """Video latents ``[b, c, f, h, w]`` as the transformer's tokens ``[b, f h w, c']``."""
        c = self.unet.config
        return _packing()._pack_latents(latents, c.patch_size, c.patch_size_t)

    def _unpack(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        c = self.unet.config
        return _packing()._unpack_latents(tokens, *grid, c.patch_size, c.patch_size_t)

    def _split(self, latents: torch.Tensor):
        """The video's and the sound's tokens of a sampling state."""
        if self._geometry is None:
            raise RuntimeError("LTX-2 sampling state without initial_latents")
        f, h, w, a = self._geometry
        if latents.shape[1] != f * h * w + a:
            raise RuntimeError(
                f"LTX-2 sampling state of {latents.shape[1]} tokens; initial_latents made "
                f"{f * h * w + a}"
            )
        return latents[:, : f * h * w], latents[:, f * h * w :]

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim == 3:
            latents = self._unpack(self._split(latents)[0], self._geometry[:3])
        latents = latents.to(device=self.device, dtype=self.vae.dtype)
        mean, std = self._latent_stats(latents)
        latents = latents * std + mean
        timestep = None
        if self.vae.config.timestep_conditioning:  # the pipeline's decode timestep, 0
            timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
        return self.vae.decode(latents, timestep, return_dict=False)[0]

    def decode_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """The sound ``[b, channels, samples]`` of a sampling state, at ``audio_sample_rate``."""
        audio = self._split(latents)[1]
        config = self.audio_vae.config
        mean = self.audio_vae.latents_mean.to(audio.device, audio.dtype)
        std = self.audio_vae.latents_std.to(audio.device, audio.dtype)
        audio = audio * std + mean
        mel = config.mel_bins // self.audio_vae.mel_compression_ratio
        audio = _packing()._unpack_audio_latents(audio, self._geometry[3], num_mel_bins=mel)
        device = next(self.audio_vae.parameters()).device
        spectrogram = self.audio_vae.decode(audio.to(device, self.audio_vae.dtype))[0]
        return self.vocoder(spectrogram.to(next(self.vocoder.parameters()).dtype))

    @property
    def audio_sample_rate(self) -> int:
        return int(self.vocoder.config.output_sampling_rate)

    # --- denoiser ------------------------------------------------------------------------
    def predict(self, latents, timesteps, context, fps, stg_blocks=None, isolate=False):
        """One transformer call. A sampling state (``[b, tokens, c]``) gives both streams'
        velocities side by side; video latents (``[b, c, f, h, w]``, training) give the
        video's, the sound given as pure noise at the highest noise level (drawn from a
        generator seeded by ``timesteps``: a run and its resumption draw the same)."""
        training = latents.ndim == 5
        if training:
            f, h, w = self._grid(latents.shape)
            pixel_frames = 1 + (latents.shape[2] - 1) * self.vae_scale_factor_temporal
            audio_frames = max(1, self.audio_frames(pixel_frames, fps))
            video = self._pack(latents)
            channels = self.unet.config.audio_in_channels
            noise = torch.randn((latents.shape[0], audio_frames, channels),
                                generator=_generator_of(timesteps))  # fmt: skip
            audio = noise.to(video.device)
            audio_t = torch.full_like(timesteps, float(self.num_train_timesteps))
        else:
            f, h, w, audio_frames = self._geometry
            video, audio = self._split(latents)
            audio_t = timesteps
        dtype = self.unet.dtype
        video_ctx, audio_ctx, mask = self._unpack_context(context.to(dtype))
        video_out, audio_out = self.unet(
            hidden_states=video.to(dtype),
            audio_hidden_states=audio.to(dtype),
            encoder_hidden_states=video_ctx,
            audio_encoder_hidden_states=audio_ctx,
            timestep=timesteps,
            audio_timestep=audio_t,
            sigma=timesteps,
            audio_sigma=audio_t,
            encoder_attention_mask=mask,
            audio_encoder_attention_mask=mask,
            num_frames=f,
            height=h,
            width=w,
            fps=float(fps),
            audio_num_frames=audio_frames,
            isolate_modalities=isolate,
            spatio_temporal_guidance_blocks=stg_blocks,
            use_cross_timestep=self.use_cross_timestep,
            return_dict=False,
        )
        if training:
            return self._unpack(video_out, (f, h, w))
        return torch.cat([video_out, audio_out], dim=1)

    # --- guidance ------------------------------------------------------------------------
    def guidance_extra(self, s) -> bool:
        """Whether ``s`` asks for a guidance term beyond classifier-free guidance."""
        scales = self._scales(s)
        return any(v["stg"] > 0 or v["modality"] != 1.0 for v in scales.values())

    def _scales(self, s) -> dict[str, dict[str, float]]:
        def either(audio, video):
            return video if audio is None else audio

        video = {
            "cfg": float(s.guidance_scale),
            "stg": float(s.stg_scale or 0.0),
            "modality": float(1.0 if s.modality_scale is None else s.modality_scale),
            "rescale": float(s.guidance_rescale or 0.0),
        }
        audio = {
            "cfg": float(either(s.audio_guidance_scale, video["cfg"])),
            "stg": float(either(s.audio_stg_scale, video["stg"])),
            "modality": float(either(s.audio_modality_scale, video["modality"])),
            "rescale": float(either(s.audio_guidance_rescale, video["rescale"])),
        }
        return {"video": video, "audio": audio}

    def stg_blocks(self, s) -> list[int]:
        """``--spatio-temporal-guidance-blocks`` as indices (default: the pipeline's, 28)."""
        text = s.spatio_temporal_guidance_blocks
        count = len(self.unet.transformer_blocks)
        try:
            blocks = [int(x) for x in (text or "28").split(",") if x.strip()]
        except ValueError:
            raise UserError(
                f"--spatio-temporal-guidance-blocks takes block indices such as 28 or 27,28, "
                f"got {text!r}"
            ) from None
        bad = [b for b in blocks if not 0 <= b < count]
        if bad or not blocks:
            raise UserError(
                f"--spatio-temporal-guidance-blocks: this model has blocks 0 to {count - 1}, "
                f"got {text or '28 (the default)'}"
            )
        return blocks

    def guide(self, latents, sigma, uncond, cond, scale, again, s):
        """The pipeline's guidance: each branch's velocity turned into a clean estimate, the
        terms added there per stream (classifier-free, spatio-temporal, modality
        isolation), rescaled, and turned back into a velocity."""
        from diffusers.pipelines.ltx2.pipeline_ltx2 import rescale_noise_cfg

        scales = self._scales(s)
        scales["video"]["cfg"] = float(scale)
        if s.audio_guidance_scale is None:
            scales["audio"]["cfg"] = float(scale)
        x = latents.float()

        def clean(v):
            return x - v.float() * sigma

        c = clean(cond)
        deltas = torch.zeros_like(c)
        split = self._split(x)[0].shape[1]
        per = {k: [scales["video"][k], scales["audio"][k]] for k in scales["video"]}

        def add(key, other, offset):
            for part, value in zip((slice(0, split), slice(split, None)), per[key], strict=True):
                factor = value - offset
                if factor:
                    deltas[:, part] += factor * (c[:, part] - other[:, part])

        if uncond is not None:
            add("cfg", clean(uncond), 1.0)
        if any(per["stg"]):
            add("stg", clean(again(stg_blocks=self.stg_blocks(s))), 0.0)
        if any(m != 1.0 for m in per["modality"]):
            add("modality", clean(again(isolate=True)), 1.0)
        guided = c + deltas
        out = []
        for part, rescale in zip(
            (slice(0, split), slice(split, None)), per["rescale"], strict=True
        ):
            g = guided[:, part]
            if rescale > 0:
                g = rescale_noise_cfg(g, c[:, part], guidance_rescale=rescale)
            out.append(g)
        return (x - torch.cat(out, dim=1)) / sigma

    def checkpoint_blocks(self):
        return list(self.unet.transformer_blocks)

    # --- housekeeping ----------------------------------------------------------------------
    def encoders_to(self, device) -> None:
        nn.Module.to(self.connectors, device)
        super().encoders_to(device)

    def _components(self) -> tuple[nn.Module, ...]:
        return (self.text_encoder, self.connectors, self.unet, self.vae, self.audio_vae,
                self.vocoder)  # fmt: skip


def _packing():
    """``LTX2Pipeline``, whose static methods pack and unpack latents as the transformer
    reads them (imported when first needed: diffusers' LTX-2 modules are large)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    return LTX2Pipeline


def _generator_of(timesteps: torch.Tensor) -> torch.Generator:
    """A generator seeded by the values of ``timesteps`` (the memory plan's, on the meta
    device, have none: seed 0)."""
    if timesteps.is_meta:
        return torch.Generator().manual_seed(0)
    digest = hashlib.sha256(timesteps.detach().float().cpu().numpy().tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _defaults() -> ModelDefaults:
    """``LTX2Pipeline``'s defaults: 121 frames of 768x512 at 24 fps, 30 steps, guidance 3.0,
    and the negative prompt of diffusers' example."""
    return ModelDefaults(
        num_frames=121,
        height=512,
        width=768,
        fps=24,
        num_inference_steps=30,
        guidance_scale=3.0,
        negative_prompt=NEGATIVE_PROMPT,
    )


def is_ltx2_folder(path) -> bool:
    """Whether ``path`` is a diffusers folder whose pipeline is LTX-2's."""
    return is_pipeline_folder(path, "LTX2")


# --- tiny LTX-2 built in code (tests, offline smoke runs) ------------------------------------


def build_tiny_gemma_tokenizer():
    """A Gemma-style tokenizer made in code: one token a printable character, ``<bos>`` put
    first, ``<eos>``, ``<pad>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2}
    vocab.update({chr(c): len(vocab) + i for i, c in enumerate(range(32, 127))})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def build_tiny_ltx2_pipeline(seed: int = 0):
    """A random ``LTX2Pipeline`` of the real classes at toy sizes (a 2-layer Gemma 3, 1-layer
    connectors, a 2-block transformer, a one-level video VAE with 4 latent channels, a
    one-level audio VAE and a small vocoder), the same weights for the same ``seed``."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    tokenizer = build_tiny_gemma_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
            text_config=dict(vocab_size=len(tokenizer) + 8, hidden_size=32, intermediate_size=32,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             head_dim=8, max_position_embeddings=512, sliding_window=64),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, image_size=28, patch_size=14),
            mm_tokens_per_image=4, boi_token_index=len(tokenizer),
            eoi_token_index=len(tokenizer) + 1, image_token_index=len(tokenizer) + 2,
        ))  # fmt: skip
        hidden = text_encoder.config.text_config.hidden_size
        layers = text_encoder.config.text_config.num_hidden_layers
        transformer = LTX2VideoTransformer3DModel(
            in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
            attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4,
            audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
            audio_cross_attention_dim=8, num_layers=2, caption_channels=hidden,
            rope_double_precision=False, rope_type="split",
        )  # fmt: skip
        connectors = LTX2TextConnectors(
            caption_channels=hidden, text_proj_in_factor=layers + 1,
            video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
            video_connector_num_layers=1, video_connector_num_learnable_registers=None,
            audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8,
            audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
            connector_rope_base_seq_len=32, rope_double_precision=False, rope_type="split",
        )  # fmt: skip
        vae = AutoencoderKLLTX2Video(
            latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
            layers_per_block=(1,), decoder_layers_per_block=(1, 1),
            spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
            decoder_inject_noise=(False, False), downsample_type=("spatial",),
            upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False,
            patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        )  # fmt: skip
        vae.use_framewise_encoding = vae.use_framewise_decoding = False
        audio_vae = AutoencoderKLLTX2Audio(
            base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
            attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
            norm_type="pixel", causality_axis="height", dropout=0.0,
            mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160,
            is_causal=True, mel_bins=8,
        )  # fmt: skip
        vocoder = LTX2Vocoder(
            in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
            upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
            leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
        )  # fmt: skip
    for module in (text_encoder, connectors, transformer, vae, audio_vae, vocoder):
        module.eval()
    return LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True,
            base_shift=0.95,
            max_shift=2.05,
            base_image_seq_len=1024,
            max_image_seq_len=4096,
        ),  # fmt: skip
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


#: the tiny model's prompt length (the releases': 1024)
TINY_TEXT_LENGTH = 32


def build_tiny_ltx2(seed: int = 0) -> LTX2Model:
    """``tiny-ltx2``: the tiny pipeline's components behind the interface, sampling 9 frames
    at 32x32 in 4 steps by default."""
    model = LTX2Model.from_pipeline(build_tiny_ltx2_pipeline(seed), "tiny-ltx2",
                                    max_sequence_length=TINY_TEXT_LENGTH)  # fmt: skip
    model.defaults = ModelDefaults(num_frames=9, height=32, width=32, fps=24,
                                   num_inference_steps=4, guidance_scale=3.0,
                                   negative_prompt=NEGATIVE_PROMPT)  # fmt: skip
    return model
