"""The memory plan against a real GPU: each way ``customcrafter plan`` picks for the README's
cards, run at the release's size with random weights, phase by phase, estimate / measured.

For each release and task, the ways chosen for 12, 16, 24, 48 and 80 GB (each once) are run
the way ``train`` and ``generate`` run them: the weights cast or stored in float8 on the CPU,
blocks offloaded, then moved; training encodes a clip and its captions with the text encoder
and VAE on the GPU, then moves the denoisers in and takes one optimizer step (``--identifier``:
the encoders leave), each phase's peak (``torch.cuda.max_memory_allocated`` since it began)
beside the plan's estimate of it; generation makes a two-step video through the pipeline
(both weights of the schedule, so both folds), its peak beside the plan's largest phase. The ratio measured / estimate is what the plan's
``MARGIN`` must cover (the CUDA allocator's rounding, the kernels' workspaces).

    python benchmarks/memory_check.py                          # needs a CUDA GPU, ~10 min
    python benchmarks/memory_check.py --release Wan-AI/Wan2.1-T2V-1.3B-Diffusers --cards 24
    python benchmarks/memory_check.py --smoke                  # tiny-wan on the CPU

``--smoke`` checks that the script runs; its ratios mean nothing, since on the CPU the
parked components are "on the device" too.
"""

from __future__ import annotations

import argparse
import time

import torch

from customcrafter.planning import trace
from customcrafter.planning.counter import ByteCounter
from customcrafter.planning.plan import COMPUTE_DTYPE, GB, Job, estimate
from customcrafter.planning.releases import WAN21_1_3B, WAN21_14B, WAN22_5B, build_on_meta
from customcrafter.subject import SpatialSubjectModule
from customcrafter.training.loop import SubjectDenoiser

RELEASES = (WAN21_1_3B, WAN22_5B, WAN21_14B)
CARDS = (12, 16, 24, 48, 80)


def random_model(base: str):
    """``base``'s architecture with random weights on the CPU (values do not matter here:
    what is measured is memory)."""
    model = build_on_meta(base)
    for module in model._components():
        module.to_empty(device="cpu")
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02) if p.is_floating_point() else p.zero_()
            for b in module.buffers():
                b.zero_()
    model._weights_fingerprint = "random"
    return model


class Meter:
    """The peak of each phase: CUDA's allocator statistics, or on the CPU the plan's own
    byte counter (``--smoke``: the script checked, not the plan)."""

    def __init__(self, device: str):
        self.device = device
        self.peaks: dict[str, int] = {}

    def phase(self, name: str, model, fn) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            self.peaks[name] = torch.cuda.max_memory_allocated()
        else:
            counter = ByteCounter(self.device)
            for module in model._components():
                counter.hold_module(module)
            with counter:
                fn()
            self.peaks[name] = counter.peak


def run_train(job: Job, way, size, device: str) -> dict[str, int]:
    h, w, f = size
    model = random_model(job.base)
    model.to(dtype=COMPUTE_DTYPE)
    if way.weights_dtype or way.text_encoder_dtype:
        model.store(way.weights_dtype, way.text_encoder_dtype, COMPUTE_DTYPE, training=True)
    if way.offload_blocks:
        model.offload_blocks(way.offload_blocks, device)
    model.encoders_to(device)
    subject = SpatialSubjectModule.create(model, {}, identifier="sks")
    for p in subject.parameters():
        p.data = p.data.float()
    if way.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    meter = Meter(device)

    def encode():
        with torch.no_grad():
            model.encode_text(torch.ones(2, model.max_text_length, dtype=torch.long))
            video = torch.zeros(1, 3, f, h, w, device=device, dtype=COMPUTE_DTYPE)
            model.latent_distribution(video)

    meter.phase("encode", model, encode)
    for module in (model.vae, model.text_encoder):
        module.to("cpu")
    model.denoisers_to(device)
    optimizer = trace.start_optimizer(subject.parameters())
    denoiser = SubjectDenoiser(model, with_text=False)
    meter.phase(
        "step",
        model,
        lambda: trace.training_step(model, denoiser, optimizer, f, h, w, 1, True, False, device),
    )
    return meter.peaks


def run_generate(job: Job, way, size, device: str) -> dict[str, int]:
    """One video of two steps (both of the schedule's weights, so both folds) through the
    pipeline, as ``generate`` makes it; its peak is compared with the plan's largest phase."""
    from customcrafter.sampling import CustomCrafterPipeline

    h, w, f = size
    model = random_model(job.base)
    model.to(dtype=COMPUTE_DTYPE)
    subject = SpatialSubjectModule.create(model, {}, identifier="sks")
    if way.weights_dtype or way.text_encoder_dtype:
        model.store(way.weights_dtype, way.text_encoder_dtype, COMPUTE_DTYPE)
    if way.offload_blocks:
        model.offload_blocks(way.offload_blocks, device)
    if way.cpu_offload:
        model.enable_cpu_offload("model", device)
    else:
        model.to(device=device)
    pipe = CustomCrafterPipeline(model, subject)
    meter = Meter(device)

    def video():
        pipe("a sks dog", num_inference_steps=2, k=1, height=h, width=w, num_frames=f,
             fold_lora=not way.unmerged, progress=False)  # fmt: skip

    meter.phase("peak", model, video)
    return meter.peaks


def check(base: str, task: str, cards, device: str, size=None) -> None:
    job = Job(base, task, *(size or (None, None, None)), identifier=True)
    plan = estimate(job)
    ways = []
    for card in cards:
        chosen = plan.fastest_within(card)
        if chosen is not None and chosen.way not in [e.way for _, e in ways]:
            ways.append((card, chosen))
    for card, chosen in ways:
        started = time.perf_counter()
        run = run_train if task == "train" else run_generate
        measured = run(job, chosen.way, plan.size, device)
        estimates = {**chosen.phases, "peak": chosen.peak}
        parts = [
            f"{name} {estimates[name] / GB:.2f}/{measured[name] / GB:.2f} GB "
            f"({measured[name] / max(estimates[name], 1):.2f})"
            for name in measured
        ]
        flags = " ".join(chosen.way.flags(task))
        seconds = time.perf_counter() - started
        print(f"{base} {task} [{card} GB: {flags}] estimate/measured: {'; '.join(parts)} "
              f"({seconds:.0f} s)", flush=True)  # fmt: skip
        if device == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", help="default: " + ", ".join(RELEASES))
    parser.add_argument("--task", choices=["train", "generate"], action="append")
    parser.add_argument("--cards", type=int, nargs="+", default=list(CARDS))
    parser.add_argument("--smoke", action="store_true", help="tiny-wan on the CPU")
    args = parser.parse_args()
    tasks = args.task or ["train", "generate"]
    if args.smoke:
        for task in tasks:
            check("tiny-wan", task, [1], "cpu", (16, 16, 5))
        return
    if not torch.cuda.is_available():
        raise SystemExit("memory_check needs a CUDA GPU (or --smoke)")
    for base in args.release or RELEASES:
        for task in tasks:
            check(base, task, args.cards, "cuda")


if __name__ == "__main__":
    main()
