"""One video over several GPUs (``generate --context-parallel``), checked and timed in one run.

Needs N >= 2 GPUs (diffusers' context parallelism places each process on one; it does not
run on CPUs)::

    torchrun --nproc_per_node 2 benchmarks/context_parallel.py            # Wan 2.1 1.3B size
    torchrun --nproc_per_node 2 benchmarks/context_parallel.py --layers 2 --frames 9 \\
        --size 64x64 --steps 4                                               # a quick look

Every process builds the same randomly initialised Wan transformer (the real diffusers
class, seeded alike) with a subject module whose LoRA is drawn alike, samples one video
under the paper's DWVS schedule with the module folded, alone on its GPU (the reference),
then again with Ulysses and with ring attention over all the GPUs. The main process prints
(and with ``--out`` writes as JSON) the largest difference from the reference and each
way's median time. Expected: differences at float32 rounding (well under 1e-3 on a video in
[0, 1]); the speedup of N GPUs below N (attention's exchanges, and the text encoder and VAE,
which every process runs whole).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from customcrafter.models.wan import build_tiny_wan
from customcrafter.processes import state
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.sampling.dwvs import LAMBDA_L, LAMBDA_S, K
from customcrafter.subject import SpatialSubjectModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--size", default="480x832", help="HEIGHTxWIDTH")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", help="write the figures here as JSON (main process)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    group = state()
    if group.num_processes < 2 or not torch.cuda.is_available():
        raise SystemExit("run it with torchrun --nproc_per_node N (N >= 2) on N GPUs")
    dtype = getattr(torch, args.dtype)
    settings = dict(
        height=height, width=width, num_frames=args.frames, num_inference_steps=args.steps
    )

    def build():
        torch.manual_seed(0)  # the same weights on every process
        model = build_tiny_wan(
            num_layers=args.layers,
            num_attention_heads=args.heads,
            attention_head_dim=args.head_dim,
            ffn_dim=args.ffn,
            rope_max_seq_len=1024,
        )
        subject = SpatialSubjectModule.create(model, {"<new1>": "dog"})
        with torch.no_grad():
            for p in subject.lora_parameters()[1::2]:
                p.normal_(std=0.01)
        model.to(group.device, dtype=dtype)
        return CustomCrafterPipeline(model, subject)

    schedule = DynamicWeightSchedule(LAMBDA_S, LAMBDA_L, K)

    def sample(pipe):
        times = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            began = time.perf_counter()
            video = pipe("a <new1> dog", schedule=schedule, seed=0, progress=False, **settings)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
        return video.videos.float().cpu(), statistics.median(times)

    reference, alone = sample(build())
    figures = {
        "gpus": group.num_processes,
        "device": torch.cuda.get_device_name(),
        "settings": {**settings, "dtype": args.dtype, "layers": args.layers},
        "one_gpu_seconds": alone,
    }
    for mode in ("ulysses", "ring"):
        pipe = build()
        shape = pipe.model.latent_shape(1, args.frames, height, width)
        pipe.model.enable_context_parallel(mode, group.num_processes, shape)
        video, seconds = sample(pipe)
        figures[mode] = {
            "seconds": seconds,
            "speedup": alone / seconds,
            "max_abs_difference": float((video - reference).abs().max()),
        }
        del pipe
        torch.cuda.empty_cache()
    if group.is_main_process:
        text = json.dumps(figures, indent=2)
        print(text)
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(text + "\n")


if __name__ == "__main__":
    main()
