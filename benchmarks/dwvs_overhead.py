"""What Dynamic Weighted Video Sampling costs per video, measured side by side.

Three ways to sample the same number of UNet calls from one randomly initialised model:

- ``base``: the plain base model, no subject module;
- ``dwvs-folded``: the subject module under the paper's schedule, the LoRA folded into the
  weights at each change of weight (what ``customcrafter generate`` does);
- ``dwvs-unmerged``: the same schedule with peft's LoRA branches computed at every call.

Runs are interleaved (base, folded, unmerged, base, ...) and the median of each is reported
with its ratio to ``base``. The target: ``dwvs-folded / base <= 1.03``.

    python benchmarks/dwvs_overhead.py                 # CPU, a small model
    python benchmarks/dwvs_overhead.py --device cuda --channels 320 --size 256 --frames 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

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
    base = CustomCrafterPipeline(model)
    custom = CustomCrafterPipeline(model, subject)
    schedule = DynamicWeightSchedule(0.4, 0.8, 5)
    runs = {
        "base": lambda: base("a dog", num_inference_steps=args.steps, progress=False),
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
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    params = sum(p.numel() for p in model.unet.parameters())
    print(
        f"model: UNet {params / 1e6:.2f} M parameters, {args.frames} frames at {args.size}x{args.size}, "
        f"{args.steps} steps with guidance (2 x batch per UNet call), device {args.device}, "
        f"{len(subject.layers)} LoRA layers"
    )
    reference = statistics.median(times["base"])
    print(f"{'run':<16}{'median s':>10}{'ratio':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16}{median:>10.3f}{median / reference:>8.3f}")
    ratio = statistics.median(times["dwvs-folded"]) / reference
    print(f"dwvs-folded / base = {ratio:.3f} (target <= 1.03): {'OK' if ratio <= 1.03 else 'OVER'}")


if __name__ == "__main__":
    main()
