"""Wan (2.1 T2V 1.3B / 14B, 2.2 TI2V 5B, 2.2 T2V A14B) from its diffusers folder.

Built on diffusers' own classes: ``WanTransformer3DModel`` (the denoiser, kept in the
interface's ``unet`` slot), ``AutoencoderKLWan`` (a causal 3D VAE: ``4n + 1`` frames become
``n + 1`` latent frames, an image one), the UMT5 text encoder and the model's own
flow-matching scheduler. Wan 2.2 A14B has two experts: ``transformer`` for the noisy steps
and ``transformer_2`` below ``boundary_ratio`` of the schedule.

Wan's blocks have no temporal-only attention: ``blocks.N.attn1`` attends over every frame
and patch, ``attn2`` is the cross-attention to the text. The paper's spatial presets
therefore map to ``attn1`` and ``attn2`` of every block (``--lora-target-override`` takes
other projections).

Training is Wan's flow matching (``models.flow``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .base import BaseVideoModel, ModelDefaults, is_pipeline_folder, load_pipeline
from .flow import FlowMatchingTraining, scheduler_config
from .samplers import FlowMatchingSampler
from .wan_lora import LOW_NOISE_PREFIX, WanLoraNaming

#: one transformer block per spatial-block slot: every Wan block holds attn1 and attn2
WAN_BLOCK_PATTERN = r"blocks\.\d+"

#: the negative prompt Wan's own sampling code uses by default (its ``sample_neg_prompt``)
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
    "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
    "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)

#: the settings each Wan release recommends (its model card and diffusers' examples); the
#: flow shift is the scheduler config's own
_WAN21 = ModelDefaults(
    num_frames=81,
    height=480,
    width=832,
    fps=16,
    num_inference_steps=50,
    guidance_scale=5.0,
    negative_prompt=WAN_NEGATIVE_PROMPT,
)
_WAN22_TI2V = dataclasses.replace(_WAN21, num_frames=121, height=704, width=1280, fps=24)
_WAN22_A14B = dataclasses.replace(
    _WAN21,
    height=720,
    width=1280,
    num_inference_steps=40,
    guidance_scale=4.0,  # the high-noise expert's steps
    guidance_scale_2=3.0,  # the low-noise expert's (Wan 2.2's sample_guide_scale (3.0, 4.0))
)


def release_defaults_of(name: str) -> ModelDefaults:
    """The sampling defaults of the Wan release a model id names (Wan 2.1's otherwise)."""
    if "a14b" in name.lower():
        return _WAN22_A14B
    if "ti2v" in name.lower() or "5b" in name.lower():
        return _WAN22_TI2V
    return _WAN21


def is_wan_folder(path: str | Path) -> bool:
    """Whether ``path`` is a diffusers folder whose pipeline is a Wan pipeline."""
    return is_pipeline_folder(path, "Wan")


def check_num_frames(num_frames: int) -> None:
    """Wan's VAE takes ``4n + 1`` frames (1, 5, 9, ..., 81)."""
    if num_frames < 1 or (num_frames - 1) % 4:
        below = max(1, (num_frames - 1) // 4 * 4 + 1)
        raise UserError(
            f"Wan takes 4n+1 frames (1, 5, 9, ..., 81), got {num_frames}; "
            f"use {below} or {below + 4}"
        )


class WanModel(FlowMatchingTraining, BaseVideoModel):
    """A Wan text-to-video model behind the base-model interface."""

    denoiser_name = "transformer"
    spatial_block_pattern = WAN_BLOCK_PATTERN
    batch_guidance = False  # as WanPipeline: two calls, half the activations
    cache_training_inputs = True  # UMT5-XXL alone is 11 GB in bf16
    # a photo as one latent frame, as Wan was trained on images: the lab study's 1-frame
    # clips kept more motion than static ones (docs/results/lab.md; README, Wan)
    train_frames = 1
    has_start_token = False  # UMT5 has none
    lora_naming = WanLoraNaming()
    default_scheduler = "UniPCMultistepScheduler"

    def __init__(
        self,
        name: str,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        scheduler_config: dict,
        defaults: ModelDefaults | None = None,
        transformer_2: nn.Module | None = None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
        max_sequence_length: int = 512,
    ):
        if (transformer_2 is None) != (boundary_ratio is None):
            raise UserError("a two-expert Wan model needs both transformer_2 and boundary_ratio")
        self.scheduler_config = dict(scheduler_config)
        self.transformer_2 = transformer_2
        self.boundary_ratio = boundary_ratio
        self.expand_timesteps = bool(expand_timesteps)
        self.max_sequence_length = int(max_sequence_length)
        if defaults is None:
            defaults = _release_defaults(vae, transformer_2, expand_timesteps)
        super().__init__(name, transformer, vae, text_encoder, tokenizer, defaults)
        self.vae_scale_factor = int(vae.config.scale_factor_spatial)
        self.vae_scale_factor_temporal = int(vae.config.scale_factor_temporal)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype | None = None):
        """A diffusers Wan folder, or a hub id in the local Hugging Face cache."""
        path = Path(name_or_path)
        if path.exists() and not is_wan_folder(path):
            raise UserError(
                f"{path} is not a diffusers Wan folder: its model_index.json is missing or "
                "names another pipeline (Wan folders come from e.g. "
                "Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
            )
        pipe = load_pipeline("WanPipeline", name_or_path, torch_dtype, "Wan",
                             "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")  # fmt: skip
        return cls.from_pipeline(pipe, str(name_or_path))

    @classmethod
    def from_pipeline(cls, pipe, name: str = "wan", defaults: ModelDefaults | None = None):
        """Take the components of a diffusers ``WanPipeline``."""
        if pipe.transformer is None:
            raise UserError("this Wan pipeline has no high-noise transformer")
        return cls(
            name,
            pipe.transformer,
            pipe.vae,
            pipe.text_encoder,
            pipe.tokenizer,
            scheduler_config(pipe.scheduler),
            defaults,
            transformer_2=getattr(pipe, "transformer_2", None),
            boundary_ratio=pipe.config.get("boundary_ratio"),
            expand_timesteps=bool(pipe.config.get("expand_timesteps", False)),
        )

    def to_pipeline(self):
        """A diffusers ``WanPipeline`` on the same component objects (for comparisons and
        for saving the folder layout)."""
        from diffusers import WanPipeline

        return WanPipeline(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            scheduler=self.make_scheduler(),
            transformer=self.unet,
            transformer_2=self.transformer_2,
            boundary_ratio=self.boundary_ratio,
            expand_timesteps=self.expand_timesteps,
        )

    def make_sampler(self, size: tuple[int, int, int] | None = None) -> FlowMatchingSampler:
        """The model's own flow-matching scheduler (deterministic: ``eta`` 0)."""
        return FlowMatchingSampler(self.make_scheduler())

    # --- text ---------------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return self.max_sequence_length

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        return super().tokenize([prompt_clean(p) for p in prompts])

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """UMT5's last hidden states, zero past each prompt's tokens (as ``WanPipeline``)."""
        ids = input_ids.to(self.device)
        mask = ids.ne(self.tokenizer.pad_token_id).long()
        hidden = self.text_encoder(ids, mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    # --- video <-> latents ----------------------------------------------------------------
    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple:
        check_num_frames(num_frames)
        patch = self.unet.config.patch_size
        multiple = self.vae_scale_factor * patch[1]
        if height % multiple or width % multiple:
            raise UserError(
                f"height and width must be multiples of {multiple} for this Wan model "
                f"(VAE {self.vae_scale_factor}x, patches {patch[1]}x{patch[2]}), "
                f"got {height}x{width}"
            )
        frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        f = self.vae_scale_factor
        return (batch, int(self.unet.config.in_channels), frames, height // f, width // f)

    def _latent_stats(self, like: torch.Tensor):
        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, inv_std

    def encode_video(self, video: torch.Tensor, generator: torch.Generator | None = None):
        """Normalised latents of ``video`` ``[b, 3, 4n+1, h, w]`` (one frame: an image)."""
        mean, std = self.latent_distribution(video)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + std * noise.to(mean.device)

    def latent_distribution(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_num_frames(video.shape[2])
        video = video.to(device=self.device, dtype=self.vae.dtype)
        dist = self.vae.encode(video).latent_dist
        mean, inv_std = self._latent_stats(dist.mean)
        return (dist.mean - mean) * inv_std, dist.std * inv_std

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(device=self.device, dtype=self.vae.dtype)
        mean, inv_std = self._latent_stats(latents)
        return self.vae.decode(latents / inv_std + mean, return_dict=False)[0]

    # --- denoiser ------------------------------------------------------------------------
    def experts(self) -> dict[str, nn.Module]:
        if self.transformer_2 is None:
            return {"": self.unet}
        return {"": self.unet, LOW_NOISE_PREFIX: self.transformer_2}

    def guidance_at(self, timestep: float, scale: float, scale_2: float | None) -> float:
        if self.transformer_2 is None or scale_2 is None:
            return scale
        return scale if self.expert(timestep) is self.unet else scale_2

    def expert(self, timestep: float) -> nn.Module:
        """The transformer that denoises at ``timestep`` (A14B: by ``boundary_ratio``)."""
        if self.transformer_2 is None:
            return self.unet
        boundary = self.boundary_ratio * self.num_train_timesteps
        return self.unet if timestep >= boundary else self.transformer_2

    def predict(self, latents, timesteps, context, fps):
        model = self.expert(float(timesteps.flatten()[0]))
        if self.expand_timesteps:  # Wan 2.2 TI2V: one timestep per latent patch
            patch = model.config.patch_size
            f, h, w = latents.shape[2:]
            count = (f // patch[0]) * (h // patch[1]) * (w // patch[2])
            timesteps = timesteps.view(-1, 1).expand(-1, count)
        return model(
            hidden_states=latents.to(model.dtype),
            timestep=timesteps,
            encoder_hidden_states=context.to(model.dtype),
            return_dict=False,
        )[0]

    def checkpoint_blocks(self):
        return [block for expert in self.experts().values() for block in expert.blocks]

    def enable_context_parallel(self, mode: str, processes: int, latent_shape: tuple) -> None:
        """diffusers' context parallelism on every expert: the video's tokens split over the
        processes, attention by Ulysses (heads exchanged, all-to-all) or ring (keys and
        values passed round); every process ends each pass with the whole output, so the
        sampler, DWVS and the folded subject module run as on one device."""
        from diffusers import ContextParallelConfig

        patch = self.unet.config.patch_size
        f, h, w = latent_shape[2:]
        tokens = (f // patch[0]) * (h // patch[1]) * (w // patch[2])
        if tokens % processes:
            raise UserError(
                f"--context-parallel splits the video's {tokens} tokens over {processes} "
                f"processes, which does not divide them: change --num-frames, --height or "
                f"--width, or the number of processes"
            )
        heads = self.unet.config.num_attention_heads
        if mode == "ulysses" and heads % processes:
            raise UserError(
                f"--context-parallel ulysses shares the {heads} attention heads among the "
                f"processes, and {processes} do not divide them: use ring, or {processes} "
                "processes that divide the heads"
            )
        degree = {"ulysses": "ulysses_degree", "ring": "ring_degree"}[mode]
        for expert in self.experts().values():
            expert.enable_parallelism(config=ContextParallelConfig(**{degree: processes}))

    def offloadable_blocks(self):
        return [list(expert.blocks) for expert in self.experts().values()]

    # --- flow matching (training: models.flow) -------------------------------------------
    def _draw_range(self, generator) -> tuple[float, float]:
        """On a two-expert model one call's timesteps all fall in one expert's range (a
        forward pass runs one expert): an expert whose layers carry a subject module,
        picked in proportion to its share of the distribution when both do."""
        if self.transformer_2 is None:
            return 0.0, 1.0
        return self._expert_range(generator)

    def _expert_range(self, generator) -> tuple[float, float]:
        """The range of the unshifted uniform draw that lands in one expert's timesteps."""
        shift, b = self.flow_shift, float(self.boundary_ratio)
        u_boundary = b / (shift - (shift - 1) * b)  # the shift's inverse at sigma = boundary
        adapted = [any(hasattr(m, "lora_A") for m in e.modules()) for e in self.experts().values()]
        high = adapted[0] if adapted[0] != adapted[1] else None
        if high is None:  # both (or neither): the high-noise expert by its share
            high = bool(torch.rand(1, generator=generator).item() >= u_boundary)
        return (u_boundary, 1.0) if high else (0.0, u_boundary)

    # --- housekeeping ----------------------------------------------------------------------
    def streamed_in_model_offload(self) -> tuple[nn.Module, ...]:
        # UMT5-XXL (5.7 B parameters, 11 GB in bf16) is larger than the 1.3B transformer: moved
        # whole it would set the peak; streamed, a layer at a time is on the GPU
        return (self.text_encoder,)

    def _components(self) -> tuple[nn.Module, ...]:
        experts = (self.unet,) if self.transformer_2 is None else (self.unet, self.transformer_2)
        return (self.text_encoder, *experts, self.vae)


def _release_defaults(vae, transformer_2, expand_timesteps: bool) -> ModelDefaults:
    if transformer_2 is not None:
        return _WAN22_A14B
    if expand_timesteps or int(vae.config.scale_factor_spatial) == 16:
        return _WAN22_TI2V
    return _WAN21


# --- tiny Wan built in code (tests, offline smoke runs) ----------------------------------------

#: words the tiny tokenizer knows (anything else is <unk>)
TINY_WORDS = (
    "a dog cat toy mug photo of video the on in at with and running jumping swimming "
    "surfing walking grass beach snow street sky red blue green static"
).split()


def build_tiny_tokenizer():
    """A T5 tokenizer made in code: a SentencePiece-style unigram model over ``TINY_WORDS``
    (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, every sequence ended by ``</s>``, as T5's),
    wrapped in ``T5TokenizerFast``; it saves and loads as Wan's own does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -1.0) for word in dict.fromkeys(TINY_WORDS)]
    core = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=core,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )


def build_tiny_wan(
    seed: int = 0,
    two_experts: bool = False,
    max_sequence_length: int = 16,
    scheduler: str = "unipc",
    num_layers: int = 2,
    num_attention_heads: int = 2,
    attention_head_dim: int = 12,
    ffn_dim: int = 32,
    rope_max_seq_len: int = 32,
) -> WanModel:
    """A randomly initialised Wan of the real classes, small enough for a CPU test: by
    default a 2-block transformer (two 12-wide heads), a 4-level VAE of width 3, a 2-layer
    UMT5 (the transformer's size, and ``rope_max_seq_len`` for larger videos, can be raised
    for benchmarks). Its output is noise; it
    exists to exercise code. ``two_experts``: an A14B-style pair switched at
    ``boundary_ratio`` 0.875."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=rope_max_seq_len,
        )

    first = transformer()
    second = transformer() if two_experts else None
    if scheduler == "unipc":
        sched = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        )
    elif scheduler == "euler":
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    else:
        raise ValueError(f"scheduler is 'unipc' or 'euler', got {scheduler!r}")
    defaults = ModelDefaults(
        num_frames=9, height=16, width=16, fps=16, num_inference_steps=4, guidance_scale=5.0
    )
    return WanModel(
        "tiny-wan-a14b" if two_experts else "tiny-wan",
        first,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config(sched),
        defaults,
        transformer_2=second,
        boundary_ratio=0.875 if two_experts else None,
        max_sequence_length=max_sequence_length,
    )
