"""What Dynamic Weighted Video Sampling costs on Wan, beside diffusers' documented way.

Ways to sample the same video settings from one randomly initialised Wan transformer (the
real diffusers classes, no download; ``--layers 30 --heads 12 --head-dim 128 --ffn 8960``
is Wan 2.1 1.3B's):

- ``base``: this project's pipeline, no subject module (it equals ``WanPipeline`` number
  for number);
- ``dwvs-folded``: the subject module under the paper's schedule, the LoRA folded into the
  weights when the weight changes (what ``customcrafter generate`` does); on the CPU the
  module keeps a folded copy for each weight, so after the warm-up a video folds nothing;
- ``dwvs-folded-cold``: the same as the first video of a process: no copies kept before
  it, so it makes one and folds twice (``dwvs-folded``'s copies are put back after);
- ``diffusers-base``: diffusers' ``WanPipeline``, no LoRA;
- ``diffusers-set-adapters``: diffusers' documented way to change a LoRA's strength per
  step: the module exported with ``customcrafter export --format diffusers``, loaded with
  ``load_lora_weights`` (unfused), ``set_adapters`` in ``callback_on_step_end``;
- ``base-float8``, ``dwvs-float8`` and ``dwvs-float8-beside``: ``base`` and the subject
  with the transformer's weights in float8 (``--weights-dtype float8``, computed in
  bfloat16): the LoRA folded into each layer's weight as it runs where that moves fewer
  bytes (what ``generate`` does), and beside every layer at every call (``--unmerged``).

Runs are interleaved (``interleaved.py``) and the median of each is printed with its ratio
to the first way (per round, and of the medians), then ``dwvs-folded / base`` (the target: at most 1.01) and ``dwvs-float8 / base-float8``
where both ran. Each way's models are built only when it is chosen (``--ways``): at 1.3B's
size in float32 the first four take two copies of the model (11 GB), the fifth a third,
the float8 pair two more.

    python benchmarks/wan_dwvs_overhead.py                # CPU, a few minutes
    python benchmarks/wan_dwvs_overhead.py --layers 30 --heads 12 --head-dim 128 --ffn 8960 \\
        --size 64x64 --frames 5 --steps 10 --repeats 5 \\
        --ways base,dwvs-folded,dwvs-folded-cold,diffusers-base   # 1.3B's size, 24 GB of RAM
    python benchmarks/wan_dwvs_overhead.py --device cuda --layers 30 --heads 12 \\
        --head-dim 128 --ffn 8960 --size 480x832 --frames 21   # on a GPU, every way
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import torch
from interleaved import print_ratios, print_verdict, time_interleaved

from customcrafter.models.wan import build_tiny_wan
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.sampling.dwvs import LAMBDA_L, LAMBDA_S, K
from customcrafter.subject import SpatialSubjectModule
from customcrafter.subject.export import export_subject

WAYS = [
    "base",
    "dwvs-folded",
    "dwvs-folded-cold",
    "diffusers-base",
    "diffusers-set-adapters",
    "base-float8",
    "dwvs-float8",
    "dwvs-float8-beside",
]
#: (measured, reference, target) printed where both ran
RATIOS = [
    ("dwvs-folded", "base", 1.01),
    ("dwvs-float8", "base-float8", None),
    ("dwvs-float8-beside", "base-float8", None),
]


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
    parser.add_argument(
        "--ways",
        default=",".join(WAYS),
        help=f"the ways to time, comma-separated, the first the reference (default: all of "
        f"{', '.join(WAYS)})",
    )
    args = parser.parse_args()
    ways = args.ways.split(",")
    if not ways or not set(ways) <= set(WAYS) or len(set(ways)) < len(ways):
        parser.error(f"--ways: some of {', '.join(WAYS)}, each once")
    height, width = (int(v) for v in args.size.split("x"))
    settings = dict(
        height=height, width=width, num_frames=args.frames, num_inference_steps=args.steps
    )
    schedule = DynamicWeightSchedule(LAMBDA_S, LAMBDA_L, K)
    tmp = Path(tempfile.mkdtemp())

    def wan():
        return build_tiny_wan(
            num_layers=args.layers,
            num_attention_heads=args.heads,
            attention_head_dim=args.head_dim,
            ffn_dim=args.ffn,
            rope_max_seq_len=1024,  # Wan's own; the tiny default covers only tiny videos
        )

    def build(float8: bool = False):
        model = wan()
        if float8:  # cast where it is, then moved: as --weights-dtype float8 does
            model.store("float8", None, torch.bfloat16)
        return model.to(args.device)

    @functools.cache
    def subject(float8: bool = False) -> SpatialSubjectModule:
        model = wan()
        module = SpatialSubjectModule.create(model, {"<new1>": "dog"})
        draw = torch.Generator().manual_seed(1)  # the same LoRA for float32 and float8
        with torch.no_grad():
            for p in module.lora_parameters()[1::2]:
                p.copy_(torch.randn(p.shape, generator=draw) * 0.01)
        if float8:
            model.store("float8", None, torch.bfloat16)
        model.to(args.device)
        return module

    @functools.cache
    def reference():
        return build()

    @functools.cache
    def pipeline(name: str):
        if name == "base":
            return CustomCrafterPipeline(reference())
        if name == "dwvs":
            return CustomCrafterPipeline(subject().model, subject())
        if name == "base-float8":
            return CustomCrafterPipeline(build(float8=True))
        if name == "dwvs-float8":
            return CustomCrafterPipeline(subject(True).model, subject(True))
        if name == "diffusers-base":
            pipe = reference().to_pipeline()
        else:  # the module exported and loaded as diffusers does
            saved = subject().save(tmp / "subject.safetensors")
            file = export_subject(saved, tmp / "lora.safetensors", "diffusers", drop_token=True)
            pipe = build().to_pipeline()
            pipe.load_lora_weights(str(file), adapter_name="subject")
        pipe.set_progress_bar_config(disable=True)
        return pipe

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

    def ours(name: str, prompt: str = "a <new1> dog", cold: bool = False, fold: bool = True):
        pipe = pipeline(name)  # built now, not while timing
        kwargs = {} if pipe.subject is None else {"schedule": schedule, "fold_lora": fold}

        def run():
            if not cold:
                return pipe(prompt, progress=False, **kwargs, **settings)
            warm = pipe.subject.fold_copies  # put back after: the warm way keeps its copies
            pipe.subject.release_folded()
            try:
                return pipe(prompt, progress=False, **kwargs, **settings)
            finally:
                pipe.subject.fold_copies = warm

        return run

    def theirs(name: str, callback=None):
        pipe = pipeline(name)
        return lambda: diffusers_run(pipe, callback)

    makers = {
        "base": lambda: ours("base", "a dog"),
        "dwvs-folded": lambda: ours("dwvs"),
        "dwvs-folded-cold": lambda: ours("dwvs", cold=True),
        "diffusers-base": lambda: theirs("diffusers-base"),
        "diffusers-set-adapters": lambda: theirs("diffusers-set-adapters", strength),
        "base-float8": lambda: ours("base-float8", "a dog"),
        "dwvs-float8": lambda: ours("dwvs-float8"),
        "dwvs-float8-beside": lambda: ours("dwvs-float8", fold=False),
    }
    runs = {way: makers[way]() for way in ways}
    times = time_interleaved(runs, args.repeats, args.device)

    print(
        f"model: Wan transformer of {args.layers} blocks ({args.heads} heads of "
        f"{args.head_dim}, feed-forward {args.ffn}), {args.frames} frames at "
        f"{height}x{width}, {args.steps} steps with guidance, device {args.device}"
    )
    if any(w.startswith("dwvs-folded") for w in ways):
        module = subject()
        params = sum(p.numel() for p in module.model.unet.parameters())
        kept = module.fold_copies
        folds = kept.folds if kept is not None and "dwvs-folded" in ways else 0
        print(
            f"{params / 1e6:.1f} M parameters, {len(module.layers)} LoRA layers; "
            f"dwvs-folded: {folds} folds in {args.repeats + 1} videos"
        )
    print_ratios(times)
    for measured, reference_way, target in RATIOS:
        if measured in times and reference_way in times:
            print_verdict(times, measured, reference_way, target)


if __name__ == "__main__":
    main()
