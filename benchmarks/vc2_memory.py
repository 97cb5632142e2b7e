"""GPU memory and speed of VideoCrafter2 at its real size, generation and subject training.

Builds a randomly initialised full-size VideoCrafter2 (same shapes as ``model.ckpt``: 1.4 B
UNet parameters, the SD VAE, the OpenCLIP ViT-H-14 text tower), so no download is needed,
and measures, side by side in one run:

- ``generate``: 16 frames at 320x512, fp16, DDIM with guidance, a subject module under the
  paper's schedule, VAE decode in chunks; with no offload, ``model`` and ``sequential``
  CPU offload. Peak GPU memory (``torch.cuda.max_memory_allocated``) and seconds per video.
- ``train``: subject-module training steps at 320x512 (4-frame static clips, prior loss),
  bf16 weights, gradient checkpointing. Peak memory and seconds per step.

Targets: generation under 12 GB, training under 24 GB. Ratios to the target are printed.

    python benchmarks/vc2_memory.py                    # needs a CUDA GPU, ~10 minutes
    python benchmarks/vc2_memory.py --steps 10 --skip-offload
    python benchmarks/vc2_memory.py --tiny --device cpu  # a smoke run of the script itself
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from customcrafter.config import TrainConfig
from customcrafter.models.diffusers_t2v import _tiny_clip_tokenizer
from customcrafter.models.videocrafter2 import VC2_DEFAULTS, VideoCrafter2Model
from customcrafter.models.videocrafter2.schedule import VC2NoiseSchedule
from customcrafter.models.videocrafter2.text import OpenCLIPTextConfig, OpenCLIPTextEncoder
from customcrafter.models.videocrafter2.unet import VC2UNet, VC2UNetConfig
from customcrafter.models.videocrafter2.vae import build_vc2_vae
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule
from customcrafter.training import train

GIB = 1024**3
TINY = {
    "unet": VC2UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        attention_resolutions=(1, 2),
        num_res_blocks=1,
        num_head_channels=8,
        context_dim=64,
    ),
    "vae": {
        "double_z": True,
        "z_channels": 4,
        "resolution": 64,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
    "text": {"width": 64, "heads": 2, "layers": 2},
}


def build_model(tiny: bool, device: str) -> VideoCrafter2Model:
    """Random weights, real shapes (or a tiny stand-in for the smoke run)."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_clip_tokenizer(Path(tmp))
    tokenizer.pad_token = "!"
    with torch.device(device):
        unet = VC2UNet(TINY["unet"] if tiny else VC2UNetConfig())
        vae = build_vc2_vae(TINY["vae"] if tiny else None)
        text_config = OpenCLIPTextConfig(**TINY["text"]) if tiny else OpenCLIPTextConfig()
        text = OpenCLIPTextEncoder(text_config)
    defaults = VC2_DEFAULTS
    if tiny:
        defaults = type(VC2_DEFAULTS)(num_frames=4, height=32, width=32, fps=28, eta=1.0)
    return VideoCrafter2Model(
        "videocrafter2-random", unet, vae, text, tokenizer, VC2NoiseSchedule(), defaults
    )


class Meter:
    """Wall time and peak accelerator memory of a block."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.peak_gib = torch.cuda.max_memory_allocated() / GIB if self.cuda else float("nan")


def bench_generate(args, offload: str | None) -> Meter:
    model = build_model(args.tiny, "cpu" if offload else args.device)
    subject = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    dtype = torch.float32 if args.device == "cpu" else torch.float16
    model.vae_chunk_size = args.vae_chunk_size
    if offload:
        model.to(dtype=dtype)
        model.enable_cpu_offload(offload, args.device)
    else:
        model.to(device=args.device, dtype=dtype)
    pipe = CustomCrafterPipeline(model, subject)
    with Meter(args.device) as meter:
        pipe(
            "a <new1> dog running on the beach",
            schedule=DynamicWeightSchedule(0.4, 0.8, min(5, args.steps)),
            num_inference_steps=args.steps,
            progress=False,
        )
    return meter


def bench_train(args, folder: Path) -> tuple[Meter, int]:
    for name, count in (("instance", 4), ("class", 4)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(count):
            pixels = rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    model = build_model(args.tiny, args.device)
    config = TrainConfig(
        instance_data_dir=str(folder / "instance"),
        instance_prompt="video of a <new1> dog",
        class_prompt="video of a dog",
        class_data_dir=str(folder / "class"),
        output_dir=str(folder / "out"),
        max_train_steps=args.train_steps,
        checkpointing_steps=10**6,
        gradient_checkpointing=True,
        mixed_precision="no" if args.device == "cpu" else "bf16",
        learning_rate=3e-5,
    )
    with Meter(args.device) as meter:
        train(config, model=model, progress=False)
    return meter, args.train_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per video")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--vae-chunk-size", type=int, default=4)
    parser.add_argument("--skip-offload", action="store_true", help="skip the offload runs")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: smoke-test the script")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; these figures need a GPU (or use --tiny --device cpu)")

    rows = []
    for offload in [None] if args.skip_offload else [None, "model", "sequential"]:
        m = bench_generate(args, offload)
        rows.append(
            (f"generate ({offload or 'no'} offload)", m.peak_gib, 12.0, m.seconds, "s/video")
        )
    with tempfile.TemporaryDirectory() as tmp:
        m, steps = bench_train(args, Path(tmp))
    precision = "fp32" if args.device == "cpu" else "bf16"
    rows.append(
        (f"train ({precision}, checkpointing)", m.peak_gib, 24.0, m.seconds / steps, "s/step")
    )

    size = "tiny" if args.tiny else "full-size"
    print(f"\nVideoCrafter2 ({size}, random weights) on {args.device}; {args.steps} DDIM steps")
    print(f"{'run':34} {'peak GiB':>9} {'/ target':>9} {'time':>9}")
    for name, peak, target, seconds, unit in rows:
        print(f"{name:34} {peak:9.2f} {peak / target:9.2f} {seconds:9.2f} {unit}")
    if len(rows) > 2:
        base = rows[0][3]
        print("offload slowdown: " + ", ".join(f"{r[0]} {r[3] / base:.2f}x" for r in rows[1:3]))


if __name__ == "__main__":
    main()
