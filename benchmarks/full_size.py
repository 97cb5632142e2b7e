"""Each release at its real size, with random weights (nothing downloaded).

For the releases whose weights fit in this machine's memory in bf16 (Wan 2.1 T2V 1.3B and
Wan 2.2 TI2V 5B) the transformer and VAE are built on the CPU from the release's config
(``customcrafter.planning.releases``; the UMT5-XXL text encoder stays on the meta device:
an ``--identifier`` step takes caption embeddings), a subject module injected with the
``spatial-qkv`` preset, and then, at the smallest size the model takes (one latent patch):

- one training step (forward, backward, AdamW; gradient checkpointing on),
- one guided denoising step,
- the subject saved and exported to both LoRA formats.

The 14B releases (Wan 2.1 T2V 14B, Wan 2.2 T2V A14B), LTX-2 (19 B) and HunyuanVideo 1.5
(8.3 B, whose 1985 text and image tokens make even the smallest step far too slow for two
CPU cores) are built on the meta device only: their LoRA layers are counted and their
memory planned. Asserted: the LoRA layer counts (30 blocks x 6 = 180 for 1.3B and 5B, 40 x 6
= 240 for each 14B expert, 48 x 6 = 288 for LTX-2's video stream, 54 x 5 = 270 for
HunyuanVideo 1.5's double-stream blocks) and the key counts
of the exports (ComfyUI: A, B and alpha per layer; diffusers: A and B). Printed: seconds of
each part and the peak memory of the process (``ru_maxrss``) and of the step (the byte
counter of ``customcrafter plan``, run on the real tensors).

    python benchmarks/full_size.py                 # ~5 min, ~14 GB of memory at most
    python benchmarks/full_size.py --only 1.3B
    python benchmarks/full_size.py --only LTX-2
    python benchmarks/full_size.py --tiny          # tiny-wan, to check the script itself
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open

from customcrafter.planning import trace
from customcrafter.planning.plan import Job, estimate
from customcrafter.planning.releases import (
    _WAN22_VAE,
    HUNYUAN15_480P,
    LTX2,
    WAN21_1_3B,
    WAN21_14B,
    WAN22_5B,
    WAN22_A14B,
    build_on_meta,
    build_wan,
)
from customcrafter.subject import SpatialSubjectModule
from customcrafter.subject.export import export_subject
from customcrafter.training.loop import SubjectDenoiser

#: release -> (transformer size, its VAE, expected LoRA layers per expert)
ON_CPU = {"1.3B": (WAN21_1_3B, None, 180), "5B": (WAN22_5B, _WAN22_VAE, 180)}
PLANNED = {
    "14B": (WAN21_14B, 240),
    "A14B": (WAN22_A14B, 240),
    "LTX-2": (LTX2, 48 * 6),
    "HunyuanVideo-1.5": (HUNYUAN15_480P, 54 * 5),
}
KEYS_PER_LAYER = {"comfyui": 3, "diffusers": 2}


def build_random(release: str, size: str, vae_config: dict | None):
    """The release's transformer and VAE with random bf16 weights on the CPU, its text
    encoder on the meta device."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build_wan(release, size, vae_config, device="cpu", text_device="meta")
    finally:
        torch.set_default_dtype(previous)


def build_tiny():
    from customcrafter.models.wan import build_tiny_wan

    return build_tiny_wan()


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB


def run_on_cpu(name: str, model, layers: int | None, folder: Path) -> dict:
    row = {"release": name}
    subject = SpatialSubjectModule.create(model, {}, identifier="sks")
    count = len(subject.layers)
    assert layers is None or count == layers, f"{name}: {count} LoRA layers, expected {layers}"
    row["lora layers"] = count
    for p in subject.parameters():
        p.data = p.data.float()
    model.enable_gradient_checkpointing()
    h = w = model.vae_scale_factor * 2  # one latent patch of 2 x 2
    optimizer = trace.start_optimizer(subject.parameters())
    for group in optimizer.param_groups:
        group["lr"] = 1e-4
    denoiser = SubjectDenoiser(model, with_text=False)
    started = time.perf_counter()
    step = trace.training_step(model, denoiser, optimizer, 1, h, w, 1, True, False, "cpu")
    row["train step s"] = round(time.perf_counter() - started, 1)
    row["train step GB"] = round(step.peak / 1e9, 3)
    moved = subject.lora_parameters()[1::2]  # the B matrices, zero before the step
    assert all(torch.isfinite(p).all() for p in moved), "a LoRA weight is not finite"
    assert any(p.abs().sum() > 0 for p in moved), "the step did not move the LoRA"
    started = time.perf_counter()
    denoise = trace.denoising_step(model, 1, h, w, "cpu")
    row["denoise step s"] = round(time.perf_counter() - started, 1)
    row["denoise step GB"] = round(denoise.peak / 1e9, 3)
    path = subject.save(folder / f"{name}.safetensors")
    for format, per_layer in KEYS_PER_LAYER.items():
        out = export_subject(path, folder / f"{name}-{format}.safetensors", format)
        with safe_open(str(out), "pt") as f:
            keys = len(list(f.keys()))
        assert keys == per_layer * count, f"{name} {format}: {keys} keys for {count} layers"
        row[f"{format} keys"] = keys
    row["process peak GB"] = round(_peak_rss_gb(), 1)
    return row


def run_planned(name: str, release: str, layers: int) -> dict:
    model = build_on_meta(release)
    model._weights_fingerprint = "meta"
    subject = SpatialSubjectModule.create(model, {}, identifier="sks")
    per_expert = len(subject.layers) // len(model.experts())
    assert per_expert == layers, f"{name}: {per_expert} LoRA layers per expert, not {layers}"
    plan = estimate(Job(release, "train", identifier=True), vram=24)
    chosen = plan.chosen
    return {
        "release": name,
        "lora layers": len(subject.layers),
        "plan: train at 24 GB": " ".join(chosen.way.flags("train")) if chosen else "none fits",
        "estimated peak GB": round((chosen or plan.smallest).peak / 1e9, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*ON_CPU, *PLANNED], action="append")
    parser.add_argument("--tiny", action="store_true", help="tiny-wan only (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            rows.append(run_on_cpu("tiny-wan", build_tiny(), 12, Path(tmp)))
        else:
            for name, (release, vae, layers) in ON_CPU.items():
                if args.only and name not in args.only:
                    continue
                started = time.perf_counter()
                model = build_random(release, name, vae)
                built = round(time.perf_counter() - started, 1)
                row = run_on_cpu(name, model, layers, Path(tmp))
                rows.append({**row, "build s": built})
                del model
            for name, (release, layers) in PLANNED.items():
                if not args.only or name in args.only:
                    rows.append(run_planned(name, release, layers))
    for row in rows:
        print(" | ".join(f"{k}: {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
