"""Does the shapes model follow its prompts? Measured on captions it was never trained on.

Every held-out combination (one in ten, see ``world.is_held_out``) is sampled with several
seeds; the detectors read each clip's object color, background and motion direction, and
the report gives the share read as the caption says.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tqdm.auto import tqdm

from ..errors import UserError
from ..io.video import to_uint8_frames
from ..sampling import CustomCrafterPipeline
from .score import score_clip, summarise
from .world import held_out_specs, random_spec

ATTRIBUTES = ("color", "background", "motion")


def evaluate_base(
    model,
    seeds: Iterable[int] = range(3),
    batch_size: int = 16,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    split: str = "held-out",
    progress: bool = True,
) -> dict:
    """Accuracy of color, background and motion on the held-out captions (``split="train"``:
    on as many training captions, for choosing sampling settings without touching the
    held-out ones)."""
    seeds = list(seeds)
    if not seeds:
        raise UserError("give at least one seed (--seeds N samples N clips per caption)")
    pipe = CustomCrafterPipeline(model)
    specs = held_out_specs()
    if split == "train":
        rng = np.random.default_rng(12345)
        specs = [random_spec(rng) for _ in specs]
    elif split != "held-out":
        raise ValueError(f"split must be 'held-out' or 'train', got {split!r}")
    jobs = [(spec, seed) for seed in seeds for spec in specs]
    rows, scores = [], []
    bar = tqdm(total=len(jobs), desc="held-out captions", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        out = pipe(
            [spec.caption for spec, _ in batch],
            seed=batch[0][1] * 100_003 + start,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            progress=False,
        )
        for (spec, seed), clip in zip(batch, map(to_uint8_frames, out.videos), strict=True):
            score = score_clip(clip, spec.caption)
            scores.append(score)
            rows.append({"caption": spec.caption, "seed": seed, **score.as_row()})
        bar.update(len(batch))
    bar.close()
    summary = summarise(scores)
    return {
        "clips": len(rows),
        "captions": len(specs),
        "split": split,
        "accuracy": {a: summary[f"{a}_accuracy"] for a in ATTRIBUTES},
        "motion_accuracy_by_direction": summary["motion_accuracy_by_direction"],
        "mean_displacement": {
            "moving": summary["displacement_moving"],
            "standing still": summary["displacement_still"],
        },
        "rows": rows,
    }


def format_report(report: dict) -> str:
    acc = report["accuracy"]

    def share(value) -> str:
        return "-" if value is None else f"{value:.0%}"

    def pixels(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"{report['clips']} clips of {report['captions']} {report['split']} captions",
        "| color | background | motion |",
        "| --- | --- | --- |",
        f"| {share(acc['color'])} | {share(acc['background'])} | {share(acc['motion'])} |",
        "motion by direction: "
        + ", ".join(f"{m} {share(v)}" for m, v in report["motion_accuracy_by_direction"].items()),
        "mean centroid displacement (px/frame): "
        + ", ".join(f"{k} {pixels(v)}" for k, v in report["mean_displacement"].items()),
    ]
    return "\n".join(lines)
