"""GPU memory and speed of subject training and generation on Wan 2.1 T2V 1.3B at full size.

Builds a randomly initialised Wan 2.1 1.3B from diffusers' own classes with the release's
shapes (transformer: 30 blocks, 12 heads of 128, FFN 8960, text width 4096; Wan's VAE;
the UMT5-XXL encoder: 24 layers, width 4096, FFN 10240, 64 heads, 256384 tokens), so no
download is needed, and measures, one after another in one run:

- ``train``: subject-module training steps at 480x832, bf16 weights, gradient
  checkpointing, prior loss, with ``--identifier`` (the inputs encoded once, the text
  encoder and VAE off the GPU while training) on 1-frame and 17-frame static clips, and a
  learnt token (``<new1>``, the text encoder stays for its gradient) on 1-frame clips.
  Peak GPU memory (``torch.cuda.max_memory_allocated``, over the whole ``train`` call) and
  seconds per step.
- ``generate``: 81 frames at 480x832, bf16, UniPC with guidance, a subject module under
  the paper's schedule, with ``model`` CPU offload (UMT5 streamed layer by layer) and
  without offload. Peak memory and seconds per video.

Targets: training under 16 GB, generation with model offload under 10 GB; ratios to the
targets are printed.

    python benchmarks/wan_memory.py                        # needs a CUDA GPU
    python benchmarks/wan_memory.py --steps 10 --skip-no-offload
    python benchmarks/wan_memory.py --tiny --device cpu    # a smoke run of the script itself
    python benchmarks/wan_memory.py --shapes               # parameter counts (meta device)
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from vc2_memory import Meter

from customcrafter.config import TrainConfig
from customcrafter.models.wan import WanModel, build_tiny_wan
from customcrafter.planning.releases import build_wan
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule
from customcrafter.training import train


def build_wan_1_3b(device: str, dtype: torch.dtype) -> WanModel:
    """Random weights in Wan 2.1 T2V 1.3B's shapes (``customcrafter.planning.releases``),
    made on ``device`` in ``dtype``."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build_wan("wan-1.3b-random", "1.3B", device=device)
    finally:
        torch.set_default_dtype(previous)


def build(args, device: str) -> WanModel:
    if args.tiny:
        return build_tiny_wan().to(device=device)
    return build_wan_1_3b(device, torch.float32 if args.device == "cpu" else torch.bfloat16)


def _photos(folder: Path, count: int, height: int, width: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def bench_train(args, folder: Path, frames: int, identifier: bool) -> Meter:
    model = build(args, args.device)
    h, w = model.defaults.height, model.defaults.width
    name = f"{frames}-{'id' if identifier else 'token'}"
    word = "sks " if identifier else "<new1> "
    config = TrainConfig(
        base=model.name,
        instance_data_dir=str(_photos(folder / "instance", 4, h, w)),
        instance_prompt=f"video of a {word}dog",
        class_prompt="video of a dog",
        class_data_dir=str(_photos(folder / "class", 4, h, w)),
        output_dir=str(folder / name),
        identifier="sks" if identifier else None,
        train_frames=frames,
        cache_views=2,
        max_train_steps=args.train_steps,
        checkpointing_steps=10**6,
        gradient_checkpointing=True,
        mixed_precision="no" if args.device == "cpu" else "bf16",
    )
    with Meter(args.device) as meter:
        train(config, model=model, progress=False)
    del model
    _free()
    return meter


def bench_generate(args, offload: str | None) -> Meter:
    # random weights are drawn on the device (minutes faster than on the CPU, one thread);
    # enable_cpu_offload moves them to CPU memory before the measurement starts
    model = build(args, args.device)
    subject = SpatialSubjectModule.create(model, {}, identifier="sks")
    if offload:
        model.enable_cpu_offload(offload, args.device)
    pipe = CustomCrafterPipeline(model, subject)
    with Meter(args.device) as meter:
        pipe(
            "a sks dog running on the beach",
            schedule=DynamicWeightSchedule(0.4, 0.8, min(5, args.steps - 1)),
            num_inference_steps=args.steps,
            progress=False,
        )
    del pipe, model, subject
    _free()
    return meter


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps per video")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--skip-no-offload", action="store_true", help="skip that generation")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: smoke-test the script")
    parser.add_argument(
        "--shapes", action="store_true", help="print the full-size parameter counts and stop"
    )
    args = parser.parse_args()
    if args.shapes:  # on the meta device: no memory, no GPU
        model = build_wan_1_3b("meta", torch.bfloat16)
        for name in ("unet", "text_encoder", "vae"):
            count = sum(p.numel() for p in getattr(model, name).parameters())
            print(f"{name}: {count / 1e9:.3f} B parameters")
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; these figures need a GPU (or use --tiny --device cpu)")

    size = "tiny" if args.tiny else "Wan 2.1 1.3B size"
    print(f"Wan ({size}, random weights) on {args.device}; {args.steps} sampling steps")
    print(f"{'run':38} {'peak GiB':>9} {'/ target':>9} {'time':>9}")

    def row(name: str, peak: float, target: float, seconds: float, unit: str) -> None:
        # printed as each run ends, so a run cut short still reports what it measured
        print(f"{name:38} {peak:9.2f} {peak / target:9.2f} {seconds:9.2f} {unit}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for frames, identifier in ((1, True), (5 if args.tiny else 17, True), (1, False)):
            m = bench_train(args, Path(tmp), frames, identifier)
            how = "identifier, cached" if identifier else "learnt token"
            seconds = m.seconds / args.train_steps  # setup and encoding included
            row(f"train {frames}-frame ({how})", m.peak_gib, 16.0, seconds, "s/step")
    for offload in ["model"] if args.skip_no_offload else ["model", None]:
        m = bench_generate(args, offload)
        target = 10.0 if offload else float("nan")
        row(f"generate ({offload or 'no'} offload)", m.peak_gib, target, m.seconds, "s")


if __name__ == "__main__":
    main()
