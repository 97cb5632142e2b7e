"""The small interface every base video diffusion model implements.

A backend owns the frozen pieces (UNet, VAE, text encoder and tokenizer, noise schedule) and
knows the few things that differ between model families: how text becomes a context, how a
video becomes latents, how noise is added during training and which sampler undoes it
(``make_sampler``). The subject module, the training loop and the pipeline talk to nothing
else: everything a backend does differently is a method or attribute here.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError


class LoraNaming(Protocol):
    """How other tools (ComfyUI, diffusers' pipelines) name a model family's layers in
    their LoRA files: what ``customcrafter export`` writes."""

    #: the family's name, for messages ("Wan")
    family: str
    #: the file formats it writes
    formats: tuple[str, ...]
    #: ``--expert`` -> the prefix of that expert's layers in subject files
    experts: dict[str, str]

    def owns(self, target: str) -> bool:
        """Whether the layer ``target`` (named within its expert) has a name here."""

    def tensors(self, target: str, a, b, rank: int, format: str) -> dict[str, torch.Tensor]:
        """The file entries of one layer's LoRA (its scale folded into ``b``). A family
        whose tool fuses several layers into one may give ``convert(lora, rank, format)``
        instead, over every layer at once (``models/hunyuan15_lora.py``)."""


def lora_entries(naming: LoraNaming, lora: dict, rank: int, format: str) -> dict:
    """Every layer's file entries, layer by layer: ``lora`` is ``{target: (A, B)}``."""
    return {
        key: value
        for target, (a, b) in lora.items()
        for key, value in naming.tensors(target, a, b, rank, format).items()
    }


#: the dtypes frozen weights may be stored in (``--weights-dtype``), computed in another
STORAGE_DTYPES = {"float8": torch.float8_e4m3fn}
#: the module names of peft's LoRA matrices: never stored in float8
LORA_LAYER_NAMES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


@dataclass(frozen=True)
class ModelDefaults:
    """The base model's own sampling settings."""

    num_frames: int
    height: int
    width: int
    fps: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 12.0
    #: two-expert models: the guidance of the low-noise expert's steps
    guidance_scale_2: float | None = None
    eta: float = 0.0
    negative_prompt: str = ""


class BaseVideoModel(ABC):
    """A frozen text-to-video latent diffusion model.

    Tensor conventions: videos are ``[b, 3, f, h, w]`` in ``[-1, 1]``; latents are
    ``[b, c, f, h / s, w / s]`` already normalised as the denoiser expects them (the VAE's
    scale factor, or Wan's per-channel mean and std); contexts are ``[b, L, d]``; timesteps
    are ``[b]``, integers for the DDPM-trained models and floats in ``[0, 1000]`` for the
    flow-matching ones (``1000 sigma``), in the dtype the model's sampler gives them.
    """

    #: identifier recorded in subject module files (hub id, folder, or ``tiny``)
    name: str
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    defaults: ModelDefaults
    #: diffusers scheduler config the sampler is built from (the diffusers backends)
    scheduler_config: dict | None = None
    #: regex matching the module path of every *spatial* transformer block; the subject
    #: module's targets are the attention layers (attn1 / attn2) inside these blocks
    spatial_block_pattern: str = ""
    #: classifier-free guidance runs the negative and the prompt in one batched call
    #: (``False``: two calls, as ``WanPipeline`` does, half the activation memory)
    batch_guidance: bool = True
    #: the text encoder puts a start token first (CLIP's); its cross-attention keys and
    #: values get no gradient while training, as in Custom Diffusion
    has_start_token: bool = True
    #: training encodes its clips (and captions) once and moves the VAE (and text encoder)
    #: off the GPU unless told otherwise (``TrainConfig.cache_inputs``)
    cache_training_inputs: bool = False
    #: frames of a static training clip when ``TrainConfig.train_frames`` is not given
    #: (the authors' code: 4)
    train_frames: int = 4
    #: what a lab model offers beyond the interface (its world's scorer, bundled subjects,
    #: training recipe: ``models.plugins.Lab``); ``None`` for the other models
    lab: Any = None
    #: whether a step runs on the meta device (the memory plan traces it there)
    meta_traceable: bool = True
    #: where a preset's block-relative projections (``attn1.to_q``, ``attn2.to_k``, ...) are
    #: in this family's blocks, when it names them otherwise (``None``: as they are)
    preset_names: dict[str, str] | None = None
    #: how the subject module's layers are named in other tools' LoRA files (``LoraNaming``);
    #: ``None``: this family does not export
    lora_naming: LoraNaming | None = None
    #: what the family calls its denoiser (``unet`` or ``transformer``: the plan's names)
    denoiser_name: str = "unet"
    #: the ``SampleConfig`` settings of guidance terms beyond classifier-free guidance that
    #: this family's pipeline has (LTX-2's: ``guide``); the others refuse them
    guidance_options: tuple[str, ...] = ()
    #: whether the model makes a sound track with its videos (``decode_audio``)
    audio: bool = False
    #: the sound's sample rate where ``audio``
    audio_sample_rate: int | None = None

    def __init__(
        self,
        name: str,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        defaults: ModelDefaults,
        vae_chunk_size: int = 8,
    ):
        self.name = name
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.vae_chunk_size = vae_chunk_size
        self.vae_scale_factor = vae_scale_factor(vae)
        #: ``None``, ``"model"`` or ``"sequential"`` once ``enable_cpu_offload`` ran
        self.offload: str | None = None
        #: the dtype the denoisers' frozen weights are kept in when ``store_weights`` made it
        #: differ from the one they compute in (``compute_dtype``)
        self.storage_dtype: torch.dtype | None = None
        self.compute_dtype: torch.dtype | None = None
        self._weights_fingerprint: str | None = None
        #: the ``BlockOffload`` once ``offload_blocks`` ran
        self.block_offload = None
        self._execution_device: torch.device | None = None
        self.freeze()

    # --- denoisers --------------------------------------------------------------------------
    def experts(self) -> dict[str, nn.Module]:
        """The denoisers a subject module may adapt, by the prefix their layers carry in
        subject files: ``{"": unet}``; a two-expert model adds its second one."""
        return {"": self.unet}

    def guidance_at(self, timestep: float, scale: float, scale_2: float | None) -> float:
        """The guidance scale at ``timestep`` (two-expert models: ``scale_2`` in the
        low-noise expert's steps)."""
        return scale

    # --- text ---------------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids ``[b, L]`` padded to the encoder's context length."""
        out = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_text_length,
            truncation=True,
            return_tensors="pt",
        )
        return out.input_ids

    @abstractmethod
    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Context ``[b, L, d]`` for the UNet's cross-attention."""

    def context_width(self) -> int:
        """The width ``d`` of ``encode_text``'s contexts (UMT5: ``d_model``, CLIP:
        ``hidden_size``)."""
        config = self.text_encoder.config
        names = ("d_model", "hidden_size", "width")
        return int(next(getattr(config, n) for n in names if hasattr(config, n)))

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.device)
        return self.encode_text(ids)

    def token_embedding(self) -> nn.Embedding:
        """The text encoder's token embedding table (new subject tokens extend it)."""
        return self.text_encoder.get_input_embeddings()

    def set_token_embedding(self, module: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(module)

    # --- video <-> latents ----------------------------------------------------------------
    def encode_video(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampled, scaled latents ``[b, c, f, h/s, w/s]`` of ``video`` ``[b, 3, f, h, w]``,
        encoded frame by frame (in chunks of ``vae_chunk_size``) by a 2D diffusers VAE."""
        chunks = []
        for dist in self._encoded_chunks(video):  # one draw per chunk, in order
            noise = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
            chunks.append(dist.mean + dist.std * noise.to(dist.mean.device))
        return self._as_video(chunks, video.shape[0])

    def latent_distribution(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of the scaled latents of ``video``: ``encode_video`` draws
        ``mean + std * noise`` (what a training cache keeps, to draw anew each step)."""
        dists = list(self._encoded_chunks(video))
        b = video.shape[0]
        return (
            self._as_video([d.mean for d in dists], b),
            self._as_video([d.std for d in dists], b),
        )

    def _encoded_chunks(self, video: torch.Tensor):
        """The VAE's latent distribution of each chunk of ``vae_chunk_size`` frames of
        ``video`` ``[b, 3, f, h, w]``, frames of all videos in a row."""
        b, _, f, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w)
        frames = frames.to(device=self.device, dtype=self.vae.dtype)
        for chunk in frames.split(self.vae_chunk_size):
            yield self.vae.encode(chunk).latent_dist

    def _as_video(self, chunks: list[torch.Tensor], batch: int) -> torch.Tensor:
        """Per-frame latents of chunks in a row, scaled, as ``[b, c, f, h/s, w/s]``."""
        x = torch.cat(chunks) * self.vae.config.scaling_factor
        return x.reshape(batch, -1, *x.shape[1:]).permute(0, 2, 1, 3, 4)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Video ``[b, 3, f, h, w]`` in ``[-1, 1]`` from scaled latents, frame by frame."""
        return decode_frames(self.vae, latents, self.vae_chunk_size, device=self.device)

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple:
        """Shape of the initial noise for ``batch`` videos of this size (checked)."""
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise UserError(
                f"height and width must be multiples of {factor} for this model, "
                f"got {height}x{width}"
            )
        channels = self.unet.config.in_channels
        return (batch, channels, num_frames, height // factor, width // factor)

    def initial_latents(
        self,
        batch: int,
        num_frames: int,
        height: int,
        width: int,
        fps: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The sampler's starting noise (on the CPU, float32): by default one draw of
        ``latent_shape``; a model that denoises more than the video (LTX-2's sound) packs
        it in here, and its ``predict`` and ``decode_video`` read that state."""
        return torch.randn(self.latent_shape(batch, num_frames, height, width), generator=generator)

    def decode_audio(self, latents: torch.Tensor) -> torch.Tensor | None:
        """The sound ``[b, channels, samples]`` of a sampled state (``None``: no sound)."""
        return None

    # --- denoiser ------------------------------------------------------------------------
    def guide(self, latents, sigma: float, uncond, cond, scale: float, again, settings):
        """A step's guided output from its branches: ``uncond + scale (cond - uncond)``.
        ``sigma`` is the step's noise level, ``again(**options)`` runs the prompt's branch
        once more with options of the model's ``predict``, ``settings`` the
        ``SampleConfig`` (LTX-2 adds its pipeline's terms from them)."""
        return uncond + scale * (cond - uncond)

    def guidance_extra(self, settings) -> bool:
        """Whether ``settings`` ask for a guidance term beyond classifier-free guidance."""
        return False

    @abstractmethod
    def predict(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, fps: int
    ) -> torch.Tensor:
        """One UNet call: the raw model output (eps or v, see ``prediction_type``)."""

    # --- noise schedule ------------------------------------------------------------------
    def make_sampler(self, size: tuple[int, int, int] | None = None):
        """A fresh sampler for this model (``models.samplers.Sampler``): by default diffusers'
        DDIM from the model's scheduler config. ``size``: the ``(frames, height, width)`` it
        will sample (LTX-2 shifts its noise levels by it; the model's default size if not
        given)."""
        from .samplers import DDIMSampler

        return DDIMSampler(self.scheduler_config)

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int: ...

    def sample_timesteps(self, count: int, generator: torch.Generator | None = None):
        """Training timesteps ``[count]``, uniform over the schedule."""
        return torch.randint(0, self.num_train_timesteps, (count,), generator=generator)

    @abstractmethod
    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward diffusion ``x_t`` as the base model was trained with it."""

    @abstractmethod
    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """What ``predict`` should output for ``add_noise(x0, noise, t)``."""

    # --- housekeeping ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model computes (with CPU offload: the accelerator, not the storage)."""
        if self._execution_device is not None:
            return self._execution_device
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the denoiser computes in (its weights' dtype unless ``store_weights``
        keeps them in another)."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        return next(self.unet.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if kwargs and self.offload:
            raise RuntimeError("the model is CPU-offloaded; choose the device before offloading")
        if dtype is not None and self.compute_dtype is not None:
            raise RuntimeError("the weights are stored in float8; cast them before storing")
        if dtype is not None and self.block_offload is not None and dtype != self.dtype:
            raise RuntimeError("blocks are offloaded; cast the weights before offloading")
        if kwargs:
            for module in self._components():
                # nn.Module's own cast: diffusers' warns about float32 modules none of these have
                nn.Module.to(module, **kwargs)
        return self

    def encoders_to(self, device: torch.device | str) -> None:
        """Only the text encoder and the VAE to ``device``, where the model computes from now
        on (training encodes its inputs once before the denoisers need the room)."""
        for module in (self.text_encoder, self.vae):
            nn.Module.to(module, device)
        self._execution_device = torch.device(device)

    def denoisers_to(self, device: torch.device | str) -> None:
        """Only the denoisers (every expert, a subject module's LoRA with them) to ``device``."""
        for expert in self.experts().values():
            nn.Module.to(expert, device)
        self._execution_device = torch.device(device)

    def store_weights(
        self, storage_dtype: torch.dtype, compute_dtype: torch.dtype, training: bool = False
    ) -> None:
        """Keep the denoisers' frozen weights in ``storage_dtype`` (``torch.float8_e4m3fn``:
        half of bf16's memory) and compute every layer in ``compute_dtype``, each cast up as
        it runs and back after (diffusers' layerwise casting, with its skips for norms,
        embeddings and patchify; a subject module's LoRA keeps its own dtype). For good:
        the weights are not cast back.

        ``training``: convolutions keep ``compute_dtype``. Autograd keeps a convolution's
        weight itself (not a view, as for a linear layer) for the backward pass, and the cast
        back after the layer ran changes that tensor in place: the backward pass (and a
        checkpoint's recomputation) would see float8. A UNet then saves less; Wan, whose one
        convolution is its patchify, the same."""
        from diffusers.hooks import apply_layerwise_casting
        from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

        convolutions = (nn.Conv1d, nn.Conv2d, nn.Conv3d) if training else None
        for expert in self.experts().values():
            own = getattr(expert, "_skip_layerwise_casting_patterns", None) or ()
            skip = (*DEFAULT_SKIP_MODULES_PATTERN, *own, *LORA_LAYER_NAMES)
            apply_layerwise_casting(expert, storage_dtype, compute_dtype, skip, convolutions)
        self.storage_dtype, self.compute_dtype = storage_dtype, compute_dtype

    def store_text_encoder(self, storage_dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
        """The text encoder's linear layers kept in ``storage_dtype`` and computed in
        ``compute_dtype``, as ``store_weights`` does for the denoisers."""
        from diffusers.hooks import apply_layerwise_casting

        skip = text_encoder_skips(self.text_encoder)
        apply_layerwise_casting(self.text_encoder, storage_dtype, compute_dtype, skip)

    def store(
        self,
        weights: str | None,
        text_encoder: str | None,
        compute_dtype: torch.dtype,
        training: bool = False,
    ) -> None:
        """``--weights-dtype`` and ``--text-encoder-dtype`` (``"float8"`` or ``None``, as
        they are): the weights cast to ``compute_dtype`` first, here, where they are
        (``training``: see ``store_weights``)."""
        if weights is None and text_encoder is None:
            return
        self.weights_fingerprint()  # of the weights as they were
        self.to(dtype=compute_dtype)
        if weights is not None:
            self.store_weights(STORAGE_DTYPES[weights], compute_dtype, training)
        if text_encoder is not None:
            self.store_text_encoder(STORAGE_DTYPES[text_encoder], compute_dtype)
        self.compute_dtype = compute_dtype

    def enable_cpu_offload(self, mode: str, device: torch.device | str = "cuda") -> None:
        """Keep the weights in CPU memory and compute on ``device`` (accelerate hooks).

        ``"model"`` moves each component (text encoder, UNet, VAE) to ``device`` while it runs
        and back when the next one starts: little slower, the UNet alone must fit (a text
        encoder larger than the UNet, Wan's UMT5-XXL, is streamed layer by layer instead:
        ``streamed_in_model_offload``).
        ``"sequential"`` streams every layer's weights to ``device`` as it runs: the least
        accelerator memory, several times slower. Call it after the subject module is
        loaded; LoRA then runs unmerged.
        """
        from accelerate import cpu_offload, cpu_offload_with_hook

        if mode not in ("model", "sequential"):
            raise ValueError(f"offload mode must be 'model' or 'sequential', got {mode!r}")
        if self.offload:
            raise RuntimeError(f"CPU offload ({self.offload}) is already on")
        device = torch.device(device)
        self.to(device="cpu")
        components = self._components()
        if mode == "sequential":
            for module in components:
                cpu_offload(module, execution_device=device)
        else:
            hook = None
            self._offload_hooks = []
            streamed = self.streamed_in_model_offload()
            for module in components:
                if any(module is m for m in streamed):
                    cpu_offload(module, execution_device=device)
                    continue
                _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
                self._offload_hooks.append(hook)
        self.offload = mode
        self._execution_device = device

    def offloadable_blocks(self) -> list[list[nn.Module]]:
        """Each denoiser's blocks in the order they run (what ``offload_blocks`` may keep in
        CPU memory): by default the gradient checkpointing blocks, as one denoiser."""
        blocks = self.checkpoint_blocks()
        return [blocks] if blocks else []

    def offload_blocks(self, count: int, device: torch.device | str) -> None:
        """Keep the frozen weights of the last ``count`` blocks of each denoiser in CPU
        memory and stream each to ``device`` as it runs (``models.offload.BlockOffload``).
        Call it with the weights on the CPU, cast and stored as they will run and the
        subject module loaded or not; then ``to(device)`` moves the rest. Training with it
        needs gradient checkpointing."""
        from .offload import BlockOffload, choose_blocks

        if self.offload:
            raise RuntimeError(f"CPU offload ({self.offload}) is on; it and block offload exclude")
        if self.block_offload is not None:
            raise RuntimeError("blocks are offloaded already")
        groups = self.offloadable_blocks()
        if not groups:
            raise UserError(f"{type(self).__name__} has no blocks to offload")
        fewest = min(len(g) for g in groups)
        if not 0 < count <= fewest:
            raise UserError(f"--offload-blocks must be 1 to {fewest} for this model, got {count}")
        self.weights_fingerprint()  # of the weights as they are, before they go
        chosen = [choose_blocks(g, count) for g in groups]
        self.block_offload = BlockOffload(chosen, device)

    def enable_context_parallel(self, mode: str, processes: int, latent_shape: tuple) -> None:
        """Split each denoising pass of videos of ``latent_shape`` over ``processes`` GPUs
        (diffusers' context parallelism, ``mode`` ``"ulysses"`` or ``"ring"``): only
        transformer bases with a context-parallel plan in diffusers (Wan)."""
        raise UserError(
            f"--context-parallel needs a transformer base with a context-parallel plan in "
            f"diffusers (Wan); {self.name} has none: spread several videos instead (--prompts)"
        )

    def streamed_in_model_offload(self) -> tuple[nn.Module, ...]:
        """Components that ``"model"`` offload streams layer by layer rather than moving
        whole (none here)."""
        return ()

    def release_offloaded(self) -> None:
        """With ``"model"`` offload: move the last component used back to the CPU; with
        offloaded blocks, the ones still on the device."""
        for hook in getattr(self, "_offload_hooks", []):
            hook.offload()
        if self.block_offload is not None:
            self.block_offload.release()

    def _components(self) -> tuple[nn.Module, ...]:
        """The frozen networks, in the order they run."""
        return (self.text_encoder, self.unet, self.vae)

    def freeze(self) -> None:
        for module in self._components():
            module.requires_grad_(False)
            module.eval()

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The UNet's coarse blocks whose activations gradient checkpointing recomputes."""
        return []

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each of ``checkpoint_blocks()`` in the backward pass instead of keeping
        its activations (less memory, about a third more compute while training)."""
        blocks = self.checkpoint_blocks()
        if not blocks:
            raise NotImplementedError(f"{type(self).__name__} has no gradient checkpointing")
        for block in blocks:
            if getattr(block, "_customcrafter_checkpointed", False):
                continue
            block.forward = _checkpointed(block.forward)
            block._customcrafter_checkpointed = True

    def spatial_blocks(self) -> list[str]:
        """Module paths of the spatial transformer blocks, in model order."""
        pattern = re.compile(self.spatial_block_pattern)
        return [name for name, _ in self.unet.named_modules() if pattern.fullmatch(name)]

    def architecture_fingerprint(self) -> str:
        """Hash of the UNet's (every expert's) and text encoder's parameter names and shapes
        (not values)."""
        h = hashlib.sha256()
        parts = [("unet" + (f":{p}" if p else ""), m) for p, m in self.experts().items()]
        for prefix, module in (parts[0], ("text", self.text_encoder), *parts[1:]):
            for key, tensor in module.state_dict().items():
                if "lora_" in key or "new_embeddings" in key:
                    continue  # an injected subject module is not part of the base
                key = key.replace(".base_layer.", ".").replace(
                    "token_embedding.base.", "token_embedding."
                )
                h.update(f"{prefix}.{key}:{tuple(tensor.shape)};".encode())
        return h.hexdigest()[:16]

    def weights_fingerprint(self) -> str:
        """Hash of a few weight values: tells same-architecture models apart (ModelScope vs
        Zeroscope) without reading every tensor. Taken once, before the weights are cast
        (``remember_weights``): a model cast to bf16 or stored in float8 is still the model
        its subject modules were trained on."""
        if self._weights_fingerprint is None:
            self.remember_weights()
        return self._weights_fingerprint

    def remember_weights(self) -> None:
        """Take the weights fingerprint now, as the weights are (before a cast)."""
        h = hashlib.sha256()
        params = [p for n, p in self.unet.named_parameters() if "lora_" not in n]
        for p in (params[0], params[len(params) // 2], params[-1]):
            h.update(p.detach().float().cpu().flatten()[:256].numpy().tobytes())
        self._weights_fingerprint = h.hexdigest()[:16]


def text_encoder_skips(text_encoder: nn.Module) -> tuple[str, ...]:
    """Module name patterns of a text encoder that ``store_text_encoder`` leaves as they are:
    diffusers' default skips, and the layers the encoder computes in their own dtype (T5's
    ``wo``: it casts its input to the weight's dtype, which would be float8)."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    own = getattr(text_encoder, "_keep_in_fp32_modules", None) or ()
    return (*DEFAULT_SKIP_MODULES_PATTERN, *own)


def load_pipeline(pipeline: str, name_or_path: str, torch_dtype, family: str, example: str):
    """diffusers' ``pipeline`` class (``"WanPipeline"``, ...) from a folder or a cached hub
    id, or a clear error naming the ``family`` and an ``example`` hub id."""
    import diffusers

    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        return getattr(diffusers, pipeline).from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"could not load the {family} model {name_or_path!r}: {exc}\n"
            f"Give a local diffusers {family} folder, or a hub id that is in your Hugging Face "
            f"cache (e.g. {example})."
        ) from exc


def is_pipeline_folder(path, family: str) -> bool:
    """Whether ``path`` is a diffusers folder whose ``model_index.json`` names a pipeline of
    ``family`` (its class name starts so: ``Wan``, ``HunyuanVideo15``)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        return str(json.loads(index.read_text()).get("_class_name", "")).startswith(family)
    except (OSError, json.JSONDecodeError):
        return False


def vae_scale_factor(vae: nn.Module) -> int:
    """Spatial down-sampling factor of a diffusers VAE: its ``scale_factor_spatial`` where
    it says one (Wan's), else one halving per level after the first (``AutoencoderKL``)."""
    factor = getattr(vae.config, "scale_factor_spatial", None)
    if factor:
        return int(factor)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def decode_frames(
    vae: nn.Module,
    latents: torch.Tensor,
    chunk_size: int = 8,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Video ``[b, 3, f, H, W]`` from scaled latents ``[b, z, f, h, w]`` with a 2D diffusers
    VAE. It sees every frame on its own, so frames are decoded ``chunk_size`` at a time to
    bound memory; the result equals one-frame-at-a-time decoding. ``device``: where the VAE
    computes (by default where its weights are; they may be offloaded elsewhere)."""
    b, c, f, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    flat = flat.to(device=device or vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    frames = torch.cat([vae.decode(chunk).sample for chunk in flat.split(chunk_size)])
    return frames.reshape(b, f, *frames.shape[1:]).permute(0, 2, 1, 3, 4)


def _checkpointed(forward):
    def run(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    run.__wrapped__ = forward  # what the checkpoint recomputes (block offload wraps it)
    return run
