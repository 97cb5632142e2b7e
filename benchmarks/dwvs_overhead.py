"""What Dynamic Weighted Video Sampling costs per video, measured side by side.

Three ways to sample the same number of UNet calls from one randomly initialised model:

- ``base``: the plain base model (the module on the pipeline, switched off);
- ``dwvs-folded``: the subject module under the paper's schedule, the LoRA folded into the
  weights at each change of weight (what ``customcrafter generate`` does);
- ``dwvs-unmerged``: the same schedule with peft's LoRA branches computed at every call.

Runs are interleaved (``interleaved.py``: rounds of base, folded, unmerged, then the other
way round) and the median of each is reported with its ratio to ``base``. The target: ``dwvs-folded / base <= 1.03``.

    python benchmarks/dwvs_overhead.py                 # CPU, a small model
    python benchmarks/dwvs_overhead.py --device cuda --channels 320 --size 256 --frames 16
"""

from __future__ import annotations

import argparse

import torch
from interleaved import print_ratios, time_interleaved

from customcrafter.models import build_tiny_t2v
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=64, help="UNet width")
    parser.add_argument("--size", type=int, default=64, help="video height and width")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_tiny_t2v(width=args.size, num_frames=args.frames, channels=args.channels)
    subject = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    with torch.no_grad():
        for p in subject.lora_parameters()[1::2]:
            p.normal_(std=0.01)
    model.to(args.device)
    custom = CustomCrafterPipeline(model, subject)
    schedule = DynamicWeightSchedule(0.4, 0.8, 5)
    runs = {
        "base": lambda: custom(
            "a dog",
            schedule=DynamicWeightSchedule.off(),
            num_inference_steps=args.steps,
            progress=False,
        ),
        "dwvs-folded": lambda: custom(
            "a <new1> dog", schedule=schedule, num_inference_steps=args.steps, progress=False
        ),
        "dwvs-unmerged": lambda: custom(
            "a <new1> dog",
            schedule=schedule,
            num_inference_steps=args.steps,
            fold_lora=False,
            progress=False,
        ),
    }
    times = time_interleaved(runs, args.repeats, args.device)

    params = sum(p.numel() for p in model.unet.parameters())
    print(
        f"model: UNet {params / 1e6:.2f} M parameters, {args.frames} frames at {args.size}x{args.size}, "
        f"{args.steps} steps with guidance (2 x batch per UNet call), device {args.device}, "
        f"{len(subject.layers)} LoRA layers"
    )
    print_ratios(times, "dwvs-folded", 1.03)


if __name__ == "__main__":
    main()
