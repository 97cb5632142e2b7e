"""Every setting of training and sampling, once, with the paper's values as defaults.

A field's help text lives in its metadata; the CLI's flags are made from these dataclasses
(``cli/args.py``), config files (YAML, JSON or TOML, keys as the field names) fill them, and
the Python API takes them as they are. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from ..errors import UserError
from .declared import (
    _one_of,
    check_bounds,
    check_value,
    config_to_dict,
    default_device,
    default_dtype,
    field_kind,
    field_named,
    flag_of,
    help_of,
    load_config_file,
    merge_config,
    normalize,
    number_text,
    out_of_bounds,
    setting,
    split_items,
    split_pair,
)

#: the seeds every random draw takes (what torch's and numpy's generators both accept)
SEED = {"minimum": 0, "maximum": 2**32 - 1}
#: the sizes a video may have (beyond them no model samples, and the numbers overflow)
MAX_FRAMES = 1024
SIDE = {"minimum": 1, "maximum": 8192}
#: the longest a run may be (beyond it the numbers overflow, and no run ends)
MAX_STEPS = 10_000_000
#: classifier-free guidance: 1 is none; beyond 100 a video is saturated noise
GUIDANCE = {"minimum": 0.0, "maximum": 100.0}
#: the authors' CLIP (OpenAI ViT-B/32) and DINO models for the metrics
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DINO = "facebook/dino-vits16"
DTYPES = ("float32", "float16", "bfloat16")
#: what the subject module's LoRA adapts, relative to each spatial transformer block
_QKV = ("to_q", "to_k", "to_v")
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    # the paper: Q, K, V of self- (attn1) and cross-attention (attn2)
    "spatial-qkv": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in _QKV),
    # the paper's ablation without the self-attention LoRA: Q, K, V of cross-attention only
    "spatial-cross-qkv": tuple(f"attn2.{p}" for p in _QKV),
    # Custom Diffusion: K and V of cross-attention only
    "spatial-cross-kv": ("attn2.to_k", "attn2.to_v"),
    # the paper's selection plus the output projections
    "spatial-qkvo": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in (*_QKV, "to_out.0")),
}
#: what frozen weights may be stored in while they compute in another dtype
STORAGE = ("float8",)
#: where the subject module goes in a two-expert model (Wan 2.2 A14B)
EXPERTS = ("low", "high", "both")
#: the learning-rate schedules diffusers' get_scheduler knows
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "piecewise_constant",
)


@dataclass
class TrainConfig:
    """Everything that defines one subject-learning run.

    Defaults follow the paper (AdamW, lr 3e-5, weight decay 1e-2, 10k iterations, prior weight
    1.0, LoRA rank 4) and the authors' implementation (4-frame static clips, Custom Diffusion
    augmentation).
    """

    base: str = setting(
        "shapes",
        help="base model: 'shapes' (built in), 'tiny', a diffusers text-to-video folder / hub "
        "id, 'videocrafter2:/path/model.ckpt' or a converted VideoCrafter2 folder",
    )
    base_config: str | None = setting(
        None,
        help="original YAML config of a videocrafter2: checkpoint (default: read off the tensors)",
    )
    vae_chunk_size: int | None = setting(
        None,
        help="frames per VAE call; lower it to save memory (default: the model's)",
        minimum=1,
        maximum=4096,
    )
    instance_data_dir: str = setting("", help="folder with 3-10 photos of the subject")
    instance_prompt: str = setting(
        "", help="prompt with the subject's new token, e.g. 'video of a <new1> dog'"
    )
    class_prompt: str = setting(
        "", help="prompt for the subject's class, e.g. 'video of a dog' (prior preservation)"
    )
    output_dir: str = setting("", help="where the subject module and checkpoints are written")
    class_data_dir: str | None = setting(
        None,
        help="folder of class images; when absent they are generated with the base model "
        "and cached",
    )
    num_class_images: int = setting(
        200,
        help="class images to generate when --class-data-dir is absent",
        minimum=0,
        maximum=100_000,
    )
    class_sampling_steps: int = setting(
        50, help="DDIM steps for each generated class image", minimum=1, maximum=1000
    )
    class_videos: bool = setting(
        False,
        help="prior preservation on whole clips of the class (generated with the base model, "
        "so they move; or the videos in --class-data-dir) instead of still images repeated "
        "into static clips; not in the paper",
    )
    prior_loss_weight: float = setting(
        1.0,
        help="weight of the class prior-preservation loss (0 turns it off)",
        minimum=0.0,
        maximum=100.0,
    )
    lora_targets: str = setting(
        "spatial-qkv",
        help="layer preset: spatial-qkv (paper), spatial-cross-qkv (the paper's ablation "
        "without self-attention), spatial-cross-kv (Custom Diffusion), spatial-qkvo. On Wan "
        "and LTX-2, which have no temporal-only attention, the presets map to attn1 "
        "(self-attention over all frames and patches) and attn2 (cross-attention) of every "
        "block (LTX-2: the video stream's, never audio_attn1/2 or the audio-video "
        "cross-attention); on HunyuanVideo 1.5 to each double-stream block's video-token "
        "attn.to_q/to_k/to_v and text-token attn.add_k_proj/add_v_proj",
    )
    lora_target_override: list[str] | None = setting(
        None,
        help="comma-separated projections inside each spatial block, e.g. attn1.to_q,attn2.to_v",
    )
    rank: int = setting(4, help="LoRA rank", minimum=1, maximum=1024)
    initializer_words: dict[str, str] = setting(
        default_factory=dict,
        help="start a token's embedding from WORD (default: the word after the token)",
        flag="--initializer-word",
        metavar="TOKEN=WORD",
    )
    experts: str | None = setting(
        None,
        help="Wan 2.2 A14B: which expert the module goes in: high (the high-noise "
        "transformer, early steps), low (transformer_2, late steps) or both (default)",
        metavar="{low,high,both}",
    )
    identifier: str | None = setting(
        None,
        help="name the subject by this existing word (e.g. sks, written in the instance prompt "
        "before the class word: 'video of a sks dog') instead of a new token: no embedding is "
        "trained, so the LoRA alone carries the subject and exports to other tools, and the "
        "text encoder can leave the GPU during training",
        metavar="WORD",
    )
    train_frames: int | None = setting(
        None,
        help="frames in each static training clip (default: the base model's: 4, as the "
        "authors' code; 1 on Wan, each photo one latent frame, which kept more motion in "
        "the lab study, docs/results/lab.md)",
        minimum=1,
        maximum=MAX_FRAMES,
    )
    cache_inputs: bool | None = setting(
        None,
        help="encode the training clips with the VAE once (and, with --identifier, their "
        "captions with the text encoder), then train with those off the GPU; each photo "
        "becomes --cache-views augmented views drawn once instead of a new draw each step "
        "(default: on for Wan, off for the other bases)",
    )
    cache_views: int = setting(
        10,
        help="with --cache-inputs: augmented views encoded per photo (1 without --augment); "
        "each is one VAE encoding of every photo before training",
        minimum=1,
        maximum=100,
    )
    height: int | None = setting(None, help="training height (default: the base model's)", **SIDE)
    width: int | None = setting(None, help="training width (default: the base model's)", **SIDE)
    augment: bool = setting(
        True,
        help="Custom Diffusion rescale augmentation with masked loss, and horizontal flips",
    )
    learning_rate: float = setting(3e-5, help="AdamW learning rate", above=0.0, maximum=1.0)
    scale_lr: bool = setting(
        False, help="multiply the learning rate by GPUs x batch size x accumulation steps"
    )
    weight_decay: float = setting(1e-2, help="AdamW weight decay", minimum=0.0, maximum=10.0)
    adam_beta1: float = setting(0.9, help="AdamW beta1", minimum=0.0, below=1.0)
    adam_beta2: float = setting(0.999, help="AdamW beta2", minimum=0.0, below=1.0)
    adam_epsilon: float = setting(1e-8, help="AdamW epsilon", above=0.0, maximum=1.0)
    max_grad_norm: float = setting(
        1.0, help="gradient clipping norm (0: no clipping)", minimum=0.0, maximum=1e6
    )
    lr_scheduler: str = setting(
        "constant", help="constant, constant_with_warmup, linear, cosine, ..."
    )
    lr_warmup_steps: int = setting(
        0, help="learning-rate warm-up steps", minimum=0, maximum=MAX_STEPS
    )
    loss: str = setting("mse", help="mse (the paper) or l1 (the authors' code)")
    train_batch_size: int = setting(
        1, help="instance clips per step (as many class clips)", minimum=1, maximum=1024
    )
    gradient_accumulation_steps: int = setting(
        1, help="micro-batches per optimizer step", minimum=1, maximum=1024
    )
    max_train_steps: int = setting(10_000, help="optimizer steps", minimum=1, maximum=MAX_STEPS)
    gradient_checkpointing: bool = setting(False, help="trade compute for memory in the UNet")
    mixed_precision: str = setting("no", help="no, fp16 or bf16")
    weights_dtype: str | None = setting(
        None,
        help="float8: keep the denoiser's frozen weights in float8 (half of bf16's memory) "
        "and compute each layer in the mixed precision's dtype (bf16 unless fp16); the "
        "LoRA trains in float32",
        metavar="{float8}",
    )
    text_encoder_dtype: str | None = setting(
        None,
        help="float8: the text encoder's weights too (when it stays on the GPU: a learnt "
        "token, or --no-cache-inputs)",
        metavar="{float8}",
    )
    offload_blocks: int = setting(
        0,
        help="keep the frozen weights of the last N blocks of the denoiser (of each expert) "
        "in CPU memory and stream each to the GPU as it runs, the next one copied while one "
        "computes (less GPU memory, slower when the copies outlast the compute); training "
        "needs --gradient-checkpointing with it",
        minimum=0,
        maximum=1000,
        metavar="N",
    )
    fsdp: bool = setting(
        False,
        help="under several processes, shard the denoiser's weights (frozen and LoRA) and a "
        "trained text encoder's across them with FSDP (torch's fully_shard, a unit per "
        "block): each GPU holds 1/N of them and gathers a block as it runs. For a base "
        "that does not fit one GPU even in float8; learns what one process with N times "
        "the accumulation learns, as without it. Not with --weights-dtype float8 or "
        "--offload-blocks; a two-expert model needs --experts high or low",
    )
    validation_prompts: list[str] = setting(
        default_factory=list,
        help="sample this prompt (repeat the flag for more) with the subject module as it "
        "stands every --validation-steps and at the end, under DWVS, and once before "
        "training the base model with the class word, into OUTPUT/samples/step-N/ (an mp4 "
        "each and a contact sheet); the same seeds every time. Each sample costs about "
        "--validation-inference-steps x 2 denoiser calls at the training size",
        flag="--validation-prompt",
        metavar="PROMPT",
        repeat=True,
    )
    validation_steps: int = setting(
        500, help="with --validation-prompt: sample every N steps", minimum=1, maximum=MAX_STEPS
    )
    validation_inference_steps: int = setting(
        20,
        help="with --validation-prompt: denoising steps of each sample (DWVS's k scaled "
        "from the paper's 5 of 50)",
        minimum=2,
        maximum=1000,
    )
    validation_num_frames: int | None = setting(
        None,
        help="with --validation-prompt: frames of each sample (default: the base model's, "
        "at most 17)",
        minimum=1,
        maximum=MAX_FRAMES,
    )
    report_to: str | None = setting(
        None,
        help="log the losses, learning rate, gradient norm, step time and validation samples "
        "under OUTPUT/logs/<date-time>: tensorboard, wandb or none (default: tensorboard when installed, "
        "else none; nothing leaves the machine unless wandb is asked for)",
        metavar="{tensorboard,wandb,none}",
    )
    seed: int = setting(0, help="seed of every random draw of the run", **SEED)
    checkpointing_steps: int = setting(
        500, help="save a resumable checkpoint every N steps", minimum=1, maximum=MAX_STEPS
    )
    checkpoints_total_limit: int | None = setting(
        3, help="keep only the newest N checkpoints", minimum=1, maximum=MAX_STEPS
    )
    resume_from_checkpoint: str | None = setting(None, help="'latest' or a checkpoint folder")
    overwrite: bool = setting(
        False, help="replace an existing subject module and its checkpoints in --output-dir"
    )

    def validate(self) -> None:
        """Check every value, before anything is loaded or written; values a config file
        wrote as text (``learning_rate: 1e-4`` is a string to YAML) become their type."""
        normalize(self)
        _one_of(self.loss, ("mse", "l1"), "--loss", "mse (the paper) or l1")
        _one_of(self.mixed_precision, ("no", "fp16", "bf16"), "--mixed-precision")
        _one_of(self.lr_scheduler, LR_SCHEDULERS, "--lr-scheduler")
        if self.lora_target_override is None:
            _one_of(self.lora_targets, tuple(TARGET_PRESETS), "--lora-targets")
        elif not self.lora_target_override:
            raise UserError("--lora-target-override names no layer; give e.g. attn1.to_q")
        check_bounds(self)
        if self.prior_loss_weight > 0 and not self.class_prompt:
            raise UserError(
                "prior preservation needs --class-prompt (e.g. 'video of a dog'); "
                "pass --prior-loss-weight 0 to train without it"
            )
        if self.prior_loss_weight > 0 and not self.class_data_dir and self.num_class_images < 1:
            raise UserError(
                "prior preservation needs class images: give --num-class-images 1 or more "
                "(or --class-data-dir), or pass --prior-loss-weight 0 to train without it"
            )
        if self.experts is not None:
            _one_of(self.experts, EXPERTS, "--experts")
        for name in ("weights_dtype", "text_encoder_dtype"):
            if getattr(self, name) is not None:
                _one_of(getattr(self, name), STORAGE, _flag(self, name))
        if self.report_to is not None:
            _one_of(self.report_to, ("tensorboard", "wandb", "none"), "--report-to")
        if self.fsdp and (self.weights_dtype or self.offload_blocks):
            raise UserError(
                "--fsdp shards the weights as they are: leave out --weights-dtype float8 and "
                "--offload-blocks with it"
            )
        if self.offload_blocks and not self.gradient_checkpointing:
            raise UserError(
                "--offload-blocks needs --gradient-checkpointing: the backward pass recomputes "
                "each block, streaming its weights in again (add the flag, or drop "
                "--offload-blocks)"
            )
        if self.identifier is not None and self.initializer_words:
            raise UserError(
                "--initializer-word starts a new token's embedding; with --identifier no "
                "token is learnt: drop one of them"
            )
        if self.class_videos and self.train_frames is not None and self.train_frames < 2:
            raise UserError(
                "--class-videos trains on moving class clips, which need --train-frames 2 or "
                f"more (got {self.train_frames}); drop --class-videos for 1-frame training"
            )


@dataclass
class SampleConfig:
    """How one video is sampled: the sampler's settings. ``None`` means the base model's own
    default (``ModelDefaults``), which :meth:`with_defaults` fills in. The subject module's
    weight at each step is the weight schedule's (``sampling.DynamicWeightSchedule``)."""

    num_inference_steps: int | None = setting(
        None,
        help="DDIM steps (default: the base model's, 50)",
        flag="--steps",
        minimum=1,
        maximum=1000,
    )
    guidance_scale: float | None = setting(
        None,
        help="classifier-free guidance (default: the base model's, 12.0 for VideoCrafter2)",
        **GUIDANCE,
    )
    guidance_scale_2: float | None = setting(
        None,
        help="Wan 2.2 A14B: guidance in the low-noise expert's steps (default: the model's, "
        "3.0; --guidance-scale is the high-noise expert's)",
        **GUIDANCE,
    )
    stg_scale: float | None = setting(
        None,
        help="LTX-2: spatio-temporal guidance, as LTX2Pipeline's stg_scale (default 0: off)",
        **GUIDANCE,
    )
    modality_scale: float | None = setting(
        None,
        help="LTX-2: modality isolation guidance, as LTX2Pipeline's modality_scale "
        "(default 1: off)",
        **GUIDANCE,
    )
    guidance_rescale: float | None = setting(
        None,
        help="LTX-2: guidance rescale, as LTX2Pipeline's guidance_rescale (default 0: off)",
        minimum=0.0,
        maximum=1.0,
    )
    audio_guidance_scale: float | None = setting(
        None,
        help="LTX-2: the sound's classifier-free guidance (default: --guidance-scale)",
        **GUIDANCE,
    )
    audio_stg_scale: float | None = setting(
        None,
        help="LTX-2: the sound's spatio-temporal guidance (default: --stg-scale)",
        **GUIDANCE,
    )
    audio_modality_scale: float | None = setting(
        None,
        help="LTX-2: the sound's modality guidance (default: --modality-scale)",
        **GUIDANCE,
    )
    audio_guidance_rescale: float | None = setting(
        None,
        help="LTX-2: the sound's guidance rescale (default: --guidance-rescale)",
        minimum=0.0,
        maximum=1.0,
    )
    spatio_temporal_guidance_blocks: str | None = setting(
        None,
        help="LTX-2: the blocks spatio-temporal guidance perturbs, comma-separated "
        "(default: 28, the pipeline's)",
        metavar="N[,N...]",
    )
    eta: float | None = setting(
        None,
        help="DDIM eta: 0 deterministic, 1 fresh noise at every step (default: the base model's)",
        minimum=0.0,
        maximum=1.0,
    )
    num_frames: int | None = setting(
        None, help="frames (default: the base model's)", minimum=1, maximum=MAX_FRAMES
    )
    height: int | None = setting(None, help="height (default: the base model's)", **SIDE)
    width: int | None = setting(None, help="width (default: the base model's)", **SIDE)
    fps: int | None = setting(
        None, help="frame rate it is made and saved at", minimum=1, maximum=240
    )
    negative_prompt: str | None = setting(None, help="prompt guidance steers away from")
    seed: int = setting(0, help="seed of the initial noise and of DDIM's noise", **SEED)

    def validate(self) -> None:
        """Check every value (``None`` stays the model's default)."""
        normalize(self)
        check_bounds(self)

    def with_defaults(self, defaults: Any) -> SampleConfig:
        """A copy whose ``None`` sampler settings come from ``defaults`` (``ModelDefaults``)."""
        names = [f.name for f in dataclasses.fields(defaults)]
        return dataclasses.replace(
            self, **{n: getattr(defaults, n) for n in names if getattr(self, n) is None}
        )


#: the SampleConfig settings of guidance terms some bases' pipelines add to classifier-free
#: guidance (LTX-2's; ``BaseVideoModel.guidance_options``): the other bases refuse them
GUIDANCE_OPTIONS = (
    "stg_scale",
    "modality_scale",
    "guidance_rescale",
    "audio_guidance_scale",
    "audio_stg_scale",
    "audio_modality_scale",
    "audio_guidance_rescale",
    "spatio_temporal_guidance_blocks",
)
#: the sampler settings of SampleConfig (what a benchmark's ``generation:`` may set)
SAMPLER_FIELDS = tuple(f.name for f in fields(SampleConfig) if f.name != "seed")


def _flag(config, name: str) -> str:
    return flag_of(field_named(type(config), name))


__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_DINO",
    "DTYPES",
    "EXPERTS",
    "GUIDANCE",
    "GUIDANCE_OPTIONS",
    "LR_SCHEDULERS",
    "MAX_FRAMES",
    "MAX_STEPS",
    "SAMPLER_FIELDS",
    "SEED",
    "SIDE",
    "STORAGE",
    "TARGET_PRESETS",
    "SampleConfig",
    "TrainConfig",
    "check_bounds",
    "check_value",
    "config_to_dict",
    "default_device",
    "default_dtype",
    "field_kind",
    "field_named",
    "flag_of",
    "help_of",
    "load_config_file",
    "merge_config",
    "normalize",
    "number_text",
    "out_of_bounds",
    "setting",
    "split_items",
    "split_pair",
]
