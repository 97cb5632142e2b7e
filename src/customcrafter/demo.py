"""``customcrafter demo``: the whole train-then-generate path, offline, on the CPU.

It runs on the ``tiny`` base model, which is randomly initialised: the videos it writes are
noise. What the demo shows is the workflow and the files, end to end, in a minute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .config import TrainConfig
from .errors import UserError
from .io.files import write_json
from .io.video import write_video
from .subject.tokens import strip_tokens

DEMO_MARKER = ".customcrafter-demo"
DEMO_PROMPTS = ("a <new1> disk moving left", "a <new1> disk on a green background")


def make_subject_images(folder: Path, count: int = 4, size: int = 64) -> list[Path]:
    """Photos of a made-up subject: a red-and-white striped disk at varied places and scales."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        background = tuple(int(c) for c in rng.integers(0, 255, 3))
        img = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(img)
        r = int(rng.integers(size // 5, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        for k, rr in enumerate(range(r, 0, -max(2, r // 5))):
            draw.ellipse(
                (cx - rr, cy - rr, cx + rr, cy + rr),
                fill=(220, 30, 30) if k % 2 == 0 else (250, 250, 250),
            )
        path = folder / f"disk_{i}.png"
        img.save(path)
        paths.append(path)
    return paths


def run_demo(
    output_dir: Path, steps: int = 40, overwrite: bool = False, progress: bool = True
) -> dict:
    from .models import build_tiny_t2v
    from .sampling import CustomCrafterPipeline, DynamicWeightSchedule
    from .subject import SpatialSubjectModule
    from .training import train

    if output_dir.exists() and any(output_dir.iterdir()):
        # a previous demo's output is replaced; anything else is the user's and kept
        if not (overwrite or (output_dir / DEMO_MARKER).is_file()):
            raise UserError(f"{output_dir} is not empty; pass --overwrite or another --output-dir")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    (output_dir / DEMO_MARKER).write_text(
        "written by customcrafter demo; rerunning the demo replaces this folder\n"
    )
    print("CustomCrafter demo on the 'tiny' base model: it is randomly initialised, so the")
    print("videos below are noise. The demo exercises training, the subject module file and")
    print("Dynamic Weighted Video Sampling end to end; real results need a real base model.\n")
    images = make_subject_images(output_dir / "subject_images")
    config = TrainConfig(
        base="tiny",
        instance_data_dir=str(images[0].parent),
        instance_prompt="video of a <new1> disk",
        class_prompt="video of a disk",
        output_dir=str(output_dir / "subject"),
        num_class_images=4,
        class_sampling_steps=10,
        max_train_steps=steps,
        checkpointing_steps=max(1, steps // 2),
        learning_rate=1e-3,
    )
    subject_path = train(config, progress=progress)

    model = build_tiny_t2v()
    subject = SpatialSubjectModule.load(subject_path, model)
    pipe = CustomCrafterPipeline(model, subject)
    methods = {
        "base": DynamicWeightSchedule.off(),
        "constant": DynamicWeightSchedule.constant(1.0),
        "dwvs": DynamicWeightSchedule(0.4, 0.8, 5),
    }
    rows = []
    for p, prompt in enumerate(DEMO_PROMPTS):
        for name, schedule in methods.items():
            text = strip_tokens(prompt) if schedule.is_off else prompt
            pipe.subject = None if schedule.is_off else subject
            out = pipe(text, schedule=schedule, num_inference_steps=25, seed=p, progress=progress)
            stem = output_dir / "videos" / f"prompt{p}_{name}"
            write_video(stem.with_suffix(".mp4"), out.videos[0], model.defaults.fps)
            write_video(stem.with_suffix(".gif"), out.videos[0], model.defaults.fps)
            rows.append(
                {
                    "prompt": text,
                    "method": schedule.describe(),
                    "video": str(stem.with_suffix(".mp4")),
                }
            )
    write_json(output_dir / "results.json", rows)
    print(f"\n{'method':<42} prompt")
    for row in rows:
        print(f"{row['method']:<42} {row['prompt']}")
    print(f"\nsubject module: {subject_path}\nvideos: {output_dir / 'videos'}")
    return {"subject": str(subject_path), "videos": rows}
