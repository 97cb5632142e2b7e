"""Dynamic Weighted Video Sampling as a ComfyUI workflow (API format), for an exported Wan
LoRA: what ``customcrafter export --format comfyui`` writes next to the LoRA file.

The graph uses ComfyUI's core nodes only. The model (``UNETLoader``, with Wan's flow shift by
``ModelSamplingSD3``) goes through two ``LoraLoaderModelOnly`` nodes, the LoRA at
``lambda_s`` and at ``lambda_l``; one ``KSamplerAdvanced`` runs steps ``0..k`` with the first
and returns its leftover noise, a second runs ``k..steps`` with the second from there: the
paper's Algorithm 1. Then ``VAEDecode``, ``CreateVideo`` and ``SaveVideo``.

Where it stands from this project's sampler: ComfyUI's ``uni_pc`` restarts its multistep
history at the split (this project's sampler keeps it), and the schedule is the step index
``k`` (``--switch-sigma`` is not carried over). The model, text encoder and VAE file names
are those of ComfyUI's repackaged Wan releases; change them in the graph to yours.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.base import ModelDefaults

#: ComfyUI's repackaged files of each release (models/diffusion_models, text_encoders, vae)
FILES = {
    "Wan2.1-T2V-1.3B": ("wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"),
    "Wan2.1-T2V-14B": ("wan2.1_t2v_14B_fp16.safetensors", "wan_2.1_vae.safetensors"),
    "Wan2.2-TI2V-5B": ("wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors"),
}
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
#: Wan's flow shift at 480p (diffusers' and ComfyUI's templates)
SHIFT = 3.0


@dataclass(frozen=True)
class WorkflowSettings:
    """What the graph is filled with."""

    lora_name: str
    prompt: str
    base_model: str
    defaults: ModelDefaults
    lambda_s: float
    lambda_l: float
    k: int
    seed: int = 0


def release_files(base_model: str) -> tuple[str, str]:
    """``(diffusion model, VAE)`` file names for a subject's base model id."""
    for key, files in FILES.items():
        if key.lower() in base_model.lower():
            return files
    return FILES["Wan2.1-T2V-1.3B"]


def dwvs_workflow(s: WorkflowSettings) -> dict:
    """The API-format graph: node id -> ``{"class_type", "inputs"}``; a link is
    ``[node id, output index]``."""
    d = s.defaults
    unet, vae = release_files(s.base_model)
    wan22 = "ti2v" in unet
    steps = d.num_inference_steps
    if not 0 < s.k < steps:
        raise ValueError(f"k must lie inside the {steps} steps, got {s.k}")
    sampler = {
        "noise_seed": s.seed,
        "steps": steps,
        "cfg": d.guidance_scale,
        "sampler_name": "uni_pc",
        "scheduler": "simple",
        "positive": ["6", 0],
        "negative": ["7", 0],
    }
    if wan22:  # Wan 2.2's 48-channel latent comes from its VAE's node
        latent = {
            "class_type": "Wan22ImageToVideoLatent",
            "inputs": {"vae": ["3", 0], "width": d.width, "height": d.height,
                       "length": d.num_frames, "batch_size": 1},
        }  # fmt: skip
    else:
        latent = {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": d.width, "height": d.height, "length": d.num_frames,
                       "batch_size": 1},
        }  # fmt: skip
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "wan"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": SHIFT}},
        "5": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["4", 0], "lora_name": s.lora_name, "strength_model": s.lambda_s},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": s.prompt, "clip": ["2", 0]}},
        "7": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": d.negative_prompt, "clip": ["2", 0]},
        },
        "8": latent,
        "9": {
            "class_type": "KSamplerAdvanced",
            "inputs": {
                **sampler,
                "model": ["5", 0],
                "latent_image": ["8", 0],
                "add_noise": "enable",
                "start_at_step": 0,
                "end_at_step": s.k,
                "return_with_leftover_noise": "enable",
            },
        },  # fmt: skip
        "10": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["4", 0], "lora_name": s.lora_name, "strength_model": s.lambda_l},
        },
        "11": {
            "class_type": "KSamplerAdvanced",
            "inputs": {
                **sampler,
                "model": ["10", 0],
                "latent_image": ["9", 0],
                "add_noise": "disable",
                "start_at_step": s.k,
                "end_at_step": steps,
                "return_with_leftover_noise": "disable",
            },
        },  # fmt: skip
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {"class_type": "CreateVideo", "inputs": {"images": ["12", 0], "fps": float(d.fps)}},
        "14": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["13", 0],
                "filename_prefix": "video/customcrafter",
                "format": "auto",
                "codec": "auto",
            },
        },  # fmt: skip
    }
