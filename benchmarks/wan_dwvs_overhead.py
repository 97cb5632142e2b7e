"""What Dynamic Weighted Video Sampling costs on Wan, beside diffusers' documented way.

Four ways to sample the same video settings from one randomly initialised mid-size Wan
transformer (the real diffusers classes, no download):

- ``base``: this project's pipeline, no subject module (it equals ``WanPipeline`` number
  for number);
- ``dwvs-folded``: the subject module under the paper's schedule, the LoRA folded into the
  weights when the weight changes (what ``customcrafter generate`` does);
- ``diffusers-base``: diffusers' ``WanPipeline``, no LoRA;
- ``diffusers-set-adapters``: diffusers' documented way to change a LoRA's strength per
  step: the module exported with ``customcrafter export --format diffusers``, loaded with
  ``load_lora_weights`` (unfused), ``set_adapters`` in ``callback_on_step_end``.

Runs are interleaved and the median of each is printed with its ratio to ``base``.
The target: ``dwvs-folded / base <= 1.01``.

    python benchmarks/wan_dwvs_overhead.py                # CPU, a few minutes
    python benchmarks/wan_dwvs_overhead.py --device cuda --layers 30 --heads 12 --head-dim 128 \\
        --ffn 8960 --size 480x832 --frames 81            # Wan 2.1 1.3B's transformer size
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from interleaved import print_ratios, time_interleaved

from customcrafter.models.wan import build_tiny_wan
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.sampling.dwvs import LAMBDA_L, LAMBDA_S, K
from customcrafter.subject import SpatialSubjectModule
from customcrafter.subject.export import export_subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--size", default="128x128", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    def build():
        return build_tiny_wan(
            num_layers=args.layers,
            num_attention_heads=args.heads,
            attention_head_dim=args.head_dim,
            ffn_dim=args.ffn,
            rope_max_seq_len=1024,  # Wan's own; the tiny default covers only tiny videos
        )

    model = build()
    subject = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    with torch.no_grad():
        for p in subject.lora_parameters()[1::2]:
            p.normal_(std=0.01)
    settings = dict(
        height=height, width=width, num_frames=args.frames, num_inference_steps=args.steps
    )
    with tempfile.TemporaryDirectory() as tmp:
        saved = subject.save(Path(tmp) / "subject.safetensors")
        lora = export_subject(saved, Path(tmp) / "lora.safetensors", "diffusers", drop_token=True)
        reference = build().to(args.device)
        plain = reference.to_pipeline()
        adapted = build().to(args.device).to_pipeline()
        adapted.load_lora_weights(str(lora), adapter_name="subject")
    model.to(args.device)
    base = CustomCrafterPipeline(reference)
    custom = CustomCrafterPipeline(model, subject)
    schedule = DynamicWeightSchedule(LAMBDA_S, LAMBDA_L, K)

    def strength(pipe, i, t, kwargs):  # runs after step i: set the weight of step i + 1
        pipe.set_adapters(["subject"], [LAMBDA_S if i + 1 < K else LAMBDA_L])
        return kwargs

    def diffusers_run(pipe, callback=None):
        if callback is not None:
            pipe.set_adapters(["subject"], [LAMBDA_S])
        return pipe(
            "a dog",
            output_type="pt",  # decoded, as ours
            max_sequence_length=16,
            callback_on_step_end=callback,
            **settings,
        )

    runs = {
        "base": lambda: base("a dog", progress=False, **settings),
        "dwvs-folded": lambda: custom(
            "a <new1> dog", schedule=schedule, progress=False, **settings
        ),
        "diffusers-base": lambda: diffusers_run(plain),
        "diffusers-set-adapters": lambda: diffusers_run(adapted, strength),
    }
    plain.set_progress_bar_config(disable=True)
    adapted.set_progress_bar_config(disable=True)
    times = time_interleaved(runs, args.repeats, args.device)

    params = sum(p.numel() for p in model.unet.parameters())
    print(
        f"model: Wan transformer {params / 1e6:.1f} M parameters ({args.layers} blocks), "
        f"{args.frames} frames at {height}x{width}, {args.steps} steps with guidance, "
        f"device {args.device}, {len(subject.layers)} LoRA layers"
    )
    print_ratios(times, "dwvs-folded", 1.01)


if __name__ == "__main__":
    main()
