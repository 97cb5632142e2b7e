"""The released base models' architectures, built without their weights.

``build_on_meta(base)`` makes a base model whose tensors are on the meta device (shapes and
dtypes, no memory): from a Wan folder or cached hub id, its own configs; for the releases'
hub ids when they are not cached, the configs written here (the shapes of each release's
``config.json`` files; Wan 2.2's VAE latent statistics are left at 0 and 1, which change no
size). The tiny test models and the named bases build for real, on the meta device too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..errors import UserError

WAN21_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
WAN21_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
WAN22_5B = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
WAN22_A14B = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
VIDEOCRAFTER2 = "VideoCrafter/VideoCrafter2"
MODELSCOPE = "ali-vilab/text-to-video-ms-1.7b"
LTX2 = "Lightricks/LTX-2"
HUNYUAN15_480P = "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v"

_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    attention_head_dim=128,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
#: the transformer sizes that differ between the releases
_WAN_SIZES = {
    "1.3B": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16),
    "14B": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=16),
    "5B": dict(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48),
}
#: UMT5-XXL's encoder (every Wan release)
_UMT5_XXL = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
    pad_token_id=0,
    eos_token_id=1,
)
#: Wan 2.2 TI2V 5B's VAE (16x spatial, 48 latent channels)
_WAN22_VAE = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
#: Stable Diffusion's VAE (VideoCrafter2 and ModelScope)
_SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


def build_wan(
    name: str,
    size: str,
    vae: dict | None = None,
    two_experts: bool = False,
    device: str = "meta",
    text_device: str | None = None,
):
    """The Wan release of transformer ``size`` (``"1.3B"``, ``"14B"``, ``"5B"``; ``vae``:
    Wan 2.2's 48-channel one, else Wan 2.1's) built on ``device``: on the meta device shapes
    alone; on a real device random weights in the default dtype. UMT5-XXL on
    ``text_device`` (default: ``device``); the tokenizer the tiny one made in code."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ..models.flow import scheduler_config
    from ..models.wan import WanModel, build_tiny_tokenizer

    sizes = {**_WAN_TRANSFORMER, **_WAN_SIZES[size]}
    sizes["out_channels"] = sizes["in_channels"]
    with torch.device(device):
        transformer = WanTransformer3DModel(**sizes)
        second = WanTransformer3DModel(**sizes) if two_experts else None
        autoencoder = AutoencoderKLWan(**(vae or {}))  # defaults: Wan 2.1's VAE
    with torch.device(text_device or device):
        encoder = UMT5EncoderModel(UMT5Config(**_UMT5_XXL))
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return WanModel(
        name,
        transformer,
        autoencoder,
        encoder,
        build_tiny_tokenizer(),
        scheduler_config(scheduler),
        transformer_2=second,
        boundary_ratio=0.875 if two_experts else None,
        expand_timesteps=vae is not None,
    )


def _videocrafter2():
    from diffusers import AutoencoderKL

    from ..models.videocrafter2.model import VideoCrafter2Model
    from ..models.videocrafter2.schedule import VC2NoiseSchedule
    from ..models.videocrafter2.text import OpenCLIPTextConfig, OpenCLIPTextEncoder
    from ..models.videocrafter2.unet import VC2UNet, VC2UNetConfig

    with torch.device("meta"):
        unet, vae = VC2UNet(VC2UNetConfig()), AutoencoderKL(**_SD_VAE)
        text = OpenCLIPTextEncoder(OpenCLIPTextConfig())
    return VideoCrafter2Model(VIDEOCRAFTER2, unet, vae, text, _clip_tokenizer(), VC2NoiseSchedule())


def _modelscope():
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..models.base import ModelDefaults
    from ..models.diffusers_t2v import TINY_SCHEDULER_CONFIG, DiffusersT2VModel

    with torch.device("meta"):
        unet = UNet3DConditionModel()  # the class's defaults are ModelScope's
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=23,
                num_attention_heads=16,
                max_position_embeddings=77,
                hidden_act="gelu",
                projection_dim=512,
            )
        )
        vae = AutoencoderKL(**_SD_VAE)

    defaults = ModelDefaults(num_frames=16, height=256, width=256, fps=8, guidance_scale=9.0)
    tokenizer = _clip_tokenizer()
    return DiffusersT2VModel(
        MODELSCOPE, unet, vae, text, tokenizer, TINY_SCHEDULER_CONFIG, defaults
    )


#: Gemma 3 12B (LTX-2's text encoder): its language model and SigLIP vision tower
_GEMMA3_12B = dict(
    text_config=dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                     num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
                     head_dim=256),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                       num_attention_heads=16, image_size=896, patch_size=14),
)  # fmt: skip


def _ltx2():
    """LTX-2 (19 B): diffusers' classes' defaults are its configs (18.88 B transformer
    parameters), with the VAE's compression stated (32x, 8x), Gemma 3 12B as its text
    encoder."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from ..models.flow import scheduler_config
    from ..models.ltx2 import LTX2Model, build_tiny_gemma_tokenizer

    with torch.device("meta"):
        transformer = LTX2VideoTransformer3DModel()
        # 32x smaller, 8n+1 frames -> n+1 (the class's defaults would say 64x and 16x)
        vae = AutoencoderKLLTX2Video(spatial_compression_ratio=32, temporal_compression_ratio=8)
        audio_vae, vocoder, connectors = (
            AutoencoderKLLTX2Audio(),
            LTX2Vocoder(),
            LTX2TextConnectors(),
        )
        encoder = Gemma3ForConditionalGeneration(Gemma3Config(**_GEMMA3_12B))
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )  # fmt: skip
    return LTX2Model(LTX2, transformer, vae, audio_vae, vocoder, encoder,
                     build_tiny_gemma_tokenizer(), connectors, scheduler_config(scheduler))  # fmt: skip


#: Qwen2.5-VL 7B's language model (HunyuanVideo 1.5's prompt encoder)
_QWEN25_VL_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
)  # fmt: skip
#: ByT5-small (its glyph encoder)
_BYT5_SMALL = dict(vocab_size=384, d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6)


def _hunyuan15_480p():
    """HunyuanVideo 1.5's 480p text-to-video release (8.33 B transformer parameters:
    X
        and ByT5-small as its text encoders."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import (
        ByT5Tokenizer,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLTextModel,
        T5Config,
        T5EncoderModel,
    )

    from ..models.flow import scheduler_config
    from ..models.hunyuan15 import HunyuanVideo15Model, build_tiny_qwen_tokenizer

    with torch.device("meta"):
        transformer = HunyuanVideo15Transformer3DModel(task_type="t2v")
        vae = AutoencoderKLHunyuanVideo15()
        text = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(**_QWEN25_VL_7B))
        glyph = T5EncoderModel(T5Config(**_BYT5_SMALL))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    return HunyuanVideo15Model(HUNYUAN15_480P, transformer, vae, text, build_tiny_qwen_tokenizer(),
                               glyph, ByT5Tokenizer(), scheduler_config(scheduler), 6.0, "")  # fmt: skip


def _clip_tokenizer():
    """A CLIP tokenizer of CLIP's context length (77) made in code: the plan needs only the
    length (the real vocabulary is not on this machine)."""
    import tempfile
    from pathlib import Path

    from ..models.diffusers_t2v import _tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return _tiny_clip_tokenizer(Path(tmp))


#: hub id -> how to build its architecture
RELEASES: dict[str, Callable] = {
    WAN21_1_3B: functools.partial(build_wan, WAN21_1_3B, "1.3B"),
    WAN21_14B: functools.partial(build_wan, WAN21_14B, "14B"),
    WAN22_5B: functools.partial(build_wan, WAN22_5B, "5B", _WAN22_VAE),
    WAN22_A14B: functools.partial(build_wan, WAN22_A14B, "14B", two_experts=True),
    VIDEOCRAFTER2: _videocrafter2,
    MODELSCOPE: _modelscope,
    LTX2: _ltx2,
    HUNYUAN15_480P: _hunyuan15_480p,
}


def build_on_meta(base: str):
    """The base model ``base`` with every tensor on the meta device: a release's hub id, a
    Wan folder or cached hub id (its configs read), a tiny test model or a named base."""
    if base in RELEASES:
        return RELEASES[base]()
    return _from_configs(base)


def _from_configs(base: str):
    from ..models.plugins import named_base
    from ..models.registry import TINY, _names_wan, load_base_model

    if base in TINY or named_base(base) is not None:  # small: built for real, then shapes only
        return load_base_model(base).to(device="meta")
    spec = base.removeprefix("wan:")
    if _names_wan(spec):  # a Wan folder, or a cached hub id of one
        return _wan_from_configs(spec)
    known = ", ".join(RELEASES)
    raise UserError(
        f"plan knows the releases ({known}), Wan folders and cached Wan hub ids, the tiny "
        f"test models and the named bases; {base!r} is none of them"
    )


def _wan_from_configs(path: str):
    """A Wan folder's (or cached hub id's) architecture from its config files alone."""
    from diffusers import (
        AutoencoderKLWan,
        DiffusionPipeline,
        UniPCMultistepScheduler,
        WanTransformer3DModel,
    )
    from transformers import AutoConfig, UMT5EncoderModel

    from ..models.wan import WanModel, build_tiny_tokenizer

    def config(cls, sub, required=True):
        try:
            return cls.load_config(path, subfolder=sub)
        except (OSError, ValueError) as exc:
            if required:
                raise UserError(f"{path} has no readable {sub}/ config: {exc}") from None
            return None

    second = config(WanTransformer3DModel, "transformer_2", required=False)
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(
            config(WanTransformer3DModel, "transformer")
        )
        vae = AutoencoderKLWan.from_config(config(AutoencoderKLWan, "vae"))
        encoder = UMT5EncoderModel(AutoConfig.from_pretrained(path, subfolder="text_encoder"))
        second = None if second is None else WanTransformer3DModel.from_config(second)
    index = DiffusionPipeline.load_config(path)  # model_index.json
    scheduler = UniPCMultistepScheduler.load_config(path, subfolder="scheduler")
    return WanModel(
        path,
        transformer,
        vae,
        encoder,
        build_tiny_tokenizer(),
        dict(scheduler),
        transformer_2=second,
        boundary_ratio=index.get("boundary_ratio"),
        expand_timesteps=bool(index.get("expand_timesteps", False)),
    )


def parameter_counts(model) -> dict[str, int]:
    """Component name -> parameter count (the LoRA of a subject module left out)."""
    parts = {model.denoiser_name: model.unet}
    experts = list(model.experts().values())
    if len(experts) > 1:
        parts["transformer_2"] = experts[1]
    parts |= {"text_encoder": model.text_encoder, "vae": model.vae}
    return {
        name: sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n)
        for name, module in parts.items()
    }
