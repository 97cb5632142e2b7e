"""``customcrafter demo``: learn a subject and generate videos with it, offline, on the CPU.

It customizes the shapes model (``--base shapes``, trained by this project on the shapes
world and shipped with it) with one bundled subject, a star with yellow and red stripes
that the model has never seen, from its five reference images. Then it generates the same
prompts three ways, as the paper compares them:

- ``base``: the base model with the class word ("a star ..."): a plain star, not the subject;
- ``constant``: the subject module at weight 1.0 throughout;
- ``dwvs``: Dynamic Weighted Video Sampling at the paper's settings (weight 0.4 for the
  first 5 steps, then 0.8).

It writes every video as mp4 and gif, ``contact-sheet.png`` with all of them side by side
frame by frame, and ``metrics.json`` with what the shapes-world detectors read in each video
(motion direction, background, similarity of the object to the reference images).
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

from ..errors import UserError
from ..io.contact_sheet import write_contact_sheet
from ..io.files import check_writable, write_json
from ..io.video import to_uint8_frames, write_video
from ..models import load_base_model
from ..sampling import CustomCrafterPipeline, DynamicWeightSchedule
from ..subject import SpatialSubjectModule
from ..training import train
from .customize import subject_prompt, subject_train_config
from .score import score_clip, summarise
from .world import SUBJECTS, reference_images

DEMO_MARKER = ".customcrafter-demo"
DEMO_SUBJECT = "striped-star"
#: (motion, background) of each prompt: a reference background, then a new one
DEMO_PROMPTS = (("moving right", "gray"), ("moving up", "purple"))
DEMO_METHODS = ("base", "constant", "dwvs")
SEEDS = (0, 1)


def _prepare(output_dir: Path, overwrite: bool) -> None:
    check_writable(output_dir)
    if any(output_dir.iterdir()):
        # a previous demo's output is replaced; anything else is the user's and kept
        if not (overwrite or (output_dir / DEMO_MARKER).is_file()):
            raise UserError(f"{output_dir} is not empty; pass --overwrite or another --output-dir")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / DEMO_MARKER).write_text(
        "written by customcrafter demo; rerunning the demo replaces this folder\n"
    )


def run_demo(
    output_dir: Path, steps: int = 300, overwrite: bool = False, progress: bool = True
) -> dict:
    began = time.perf_counter()
    _prepare(output_dir, overwrite)
    subject = SUBJECTS[DEMO_SUBJECT]
    print(f"CustomCrafter demo: teaching the shapes model '{subject.description}' (<new1> star)")
    print(f"from the {len(reference_images(subject))} reference images in its folder.\n")
    config = subject_train_config(DEMO_SUBJECT, output_dir / "subject", steps)
    subject_path = train(config, progress=progress)

    model = load_base_model("shapes")
    module = SpatialSubjectModule.load(subject_path, model)
    pipe = CustomCrafterPipeline(model, module)
    schedules = {
        "base": DynamicWeightSchedule.off(),
        "constant": DynamicWeightSchedule.constant(1.0),
        "dwvs": DynamicWeightSchedule(),
    }
    references = reference_images(subject)
    rows, sheet, scores = [], [], {name: [] for name in DEMO_METHODS}
    for p, (motion, background) in enumerate(DEMO_PROMPTS):
        prompt = subject_prompt(DEMO_SUBJECT, motion, background)
        for name in DEMO_METHODS:
            schedule = schedules[name]
            # the base model is the module at weight 0 with the class word: the exact base
            # weights (the module stays loaded, so its LoRA layers are folded out, not live)
            text = pipe.base_prompt(prompt) if schedule.is_off else prompt
            out = pipe([text] * len(SEEDS), schedule=schedule, seed=p, progress=progress)
            for s, video in zip(SEEDS, out.videos, strict=True):
                clip = to_uint8_frames(video)
                score = score_clip(clip, text, references)
                scores[name].append(score)
                stem = output_dir / "videos" / f"prompt{p}-seed{s}-{name}"
                write_video(stem.with_suffix(".mp4"), clip, out.fps)
                write_video(stem.with_suffix(".gif"), clip, out.fps)
                rows.append(
                    {
                        "prompt": text,
                        "method": name,
                        "schedule": schedule.describe(),
                        "seed": s,
                        "video": str(stem.with_suffix(".mp4")),
                        **score.as_row(),
                    }
                )
                sheet.append((f"{name} (seed {s})\n{textwrap.fill(text, 34)}", clip))
    write_contact_sheet(output_dir / "contact-sheet.png", sheet)
    summary = {name: summarise(scores[name]) for name in DEMO_METHODS}
    write_json(
        output_dir / "metrics.json",
        {"subject": DEMO_SUBJECT, "summary": summary, "videos": rows},
    )
    print(_table(summary))
    print(f"\nsubject module: {subject_path}")
    print(f"videos: {output_dir / 'videos'}   side by side: {output_dir / 'contact-sheet.png'}")
    print(f"metrics: {output_dir / 'metrics.json'}   ({time.perf_counter() - began:.0f} s)")
    return {"subject": str(subject_path), "summary": summary, "videos": rows}


def _table(summary: dict) -> str:
    lines = [
        "",
        f"{'method':10} {'motion ok':>10} {'background ok':>14} {'px/frame':>9} {'subject sim':>12}",
    ]
    for name, s in summary.items():
        lines.append(
            f"{name:10} {s['motion_accuracy']:>10.0%} {s['background_accuracy']:>14.0%} "
            f"{s['displacement']:>9.2f} {s['subject_similarity']:>12.2f}"
        )
    return "\n".join(lines)
