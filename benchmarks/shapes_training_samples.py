"""The demo's subject learnt by the shapes model, watched through ``--validation-prompt``:
one picture of the samples at every validation step (the README's).

Trains the demo's recipe (``shapes.customize.subject_train_config``: the striped star, 300
steps) with two validation prompts sampled every 50 steps, then stacks the first prompt's
sample of each step into one contact sheet, the base model's (class word) first.

    python benchmarks/shapes_training_samples.py --out docs/images/shapes-training-samples.png
    python benchmarks/shapes_training_samples.py --steps 2 --every 1 --out /tmp/s.png  # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from customcrafter.io.contact_sheet import write_contact_sheet
from customcrafter.io.video import read_video
from customcrafter.shapes.customize import moving_prompts, subject_train_config
from customcrafter.shapes.demo import DEMO_SUBJECT
from customcrafter.shapes.world import SUBJECTS
from customcrafter.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the picture to write (.png)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    word = SUBJECTS[DEMO_SUBJECT].class_word
    prompts = moving_prompts(word)[1:3]  # right on purple, up on purple: new backgrounds
    with tempfile.TemporaryDirectory() as tmp:
        config = subject_train_config(DEMO_SUBJECT, Path(tmp) / "run", args.steps)
        config = dataclasses.replace(
            config,
            validation_prompts=prompts,
            validation_steps=args.every,
            validation_inference_steps=25,
            report_to="none",
        )
        path = train(config, progress=False)
        rows = []
        for folder in sorted((path.parent / "samples").iterdir()):
            step = int(folder.name.removeprefix("step-"))
            video = sorted(folder.glob("00-*.mp4"))[0]
            label = "before training:\nthe base model,\nclass word" if step == 0 else f"step {step}"
            rows.append((label, read_video(video)))
        write_contact_sheet(args.out, rows, scale=3, label_width=130)
    print(f"wrote {args.out}: {len(rows)} steps ({prompts[0]!r})")


if __name__ == "__main__":
    main()
