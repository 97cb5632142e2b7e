"""The paper's claims, measured on the shapes world (CPU, about 15 minutes).

For every bundled subject, train two subject modules on the shapes model (the paper's
spatial self+cross Q/K/V LoRA, and cross-attention Q/K/V only, the paper's ablation), then
generate a fixed prompt set with several seeds under:

- ``base``: the base model with the class word (no subject module);
- ``constant 1.0``: the module at weight 1.0 at every step;
- ``dwvs``: Dynamic Weighted Video Sampling at the paper's defaults (0.4, 0.8, k=5);
- a sweep over ``k`` and over ``lambda_s``;
- the cross-attention-only module at constant 1.0 and with DWVS.

and read every clip with the shapes-world detectors:

- motion: mean centroid displacement per frame and motion-direction accuracy;
- subject fidelity: palette-histogram intersection of the object with the reference images
  (``shapes.detect.subject_similarity``: the subjects differ from their class only by their
  two-tone pattern colors);
- composition: background accuracy on prompts whose background never appears in the
  reference images.

    python benchmarks/shapes_claims.py                      # writes docs/results/shapes.md
    python benchmarks/shapes_claims.py --seeds 2 --steps 150 --out /tmp/claims.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from customcrafter.io.files import atomic_path, write_json
from customcrafter.io.video import to_uint8_frames
from customcrafter.models import load_base_model
from customcrafter.prompts import strip_tokens
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.shapes.customize import subject_prompt, subject_train_config
from customcrafter.shapes.score import score_clip, summarise
from customcrafter.shapes.world import REFERENCE_BACKGROUNDS, SUBJECTS, reference_images
from customcrafter.subject import SpatialSubjectModule
from customcrafter.training import train

#: (motion, background): every direction, on reference and on new backgrounds
PROMPT_PARTS = (
    ("moving left", "gray"),
    ("moving right", "purple"),
    ("moving up", "purple"),
    ("moving down", "white"),
    ("standing still", "purple"),
)
# (label, module, schedule); module "paper" = spatial-qkv, "cross" = cross-attention only
PAPER = DynamicWeightSchedule()
DWVS = f"DWVS {PAPER.lambda_s}/{PAPER.lambda_l}"
METHODS = [
    ("base (class word)", None, DynamicWeightSchedule.off()),
    ("constant 1.0", "paper", DynamicWeightSchedule.constant(1.0)),
    (f"{DWVS}, k={PAPER.k} (paper)", "paper", PAPER),
    *[(f"{DWVS}, k={k}", "paper", replace(PAPER, k=k)) for k in (2, 10, 25)],
    *[
        (f"DWVS {s}/{PAPER.lambda_l}, k={PAPER.k}", "paper", replace(PAPER, lambda_s=s))
        for s in (0.0, 0.2, 0.6)
    ],
    ("cross-attn only, constant 1.0", "cross", DynamicWeightSchedule.constant(1.0)),
    ("cross-attn only, DWVS (paper)", "cross", PAPER),
]
MODULES = {"paper": ("spatial-qkv", "LoRA on Q, K, V of spatial self- and cross-attention")}
MODULES["cross"] = ("spatial-cross-qkv", "LoRA on Q, K, V of spatial cross-attention only")


def run(args) -> list[dict]:
    """Train, generate and score; one row per clip: its subject, method and seed, and the
    shapes score's row (``ShapesScore.as_row``)."""
    rows = []
    work = Path(args.work or tempfile.mkdtemp(prefix="shapes-claims-"))
    subjects = args.subjects or list(SUBJECTS)
    for name in subjects:
        modules = {}
        for key, (preset, _) in MODULES.items():
            config = subject_train_config(name, work / name / key, args.steps, lora_targets=preset)
            config.seed = args.train_seed
            config.overwrite = True
            print(f"training {name} ({preset}, {args.steps} steps)", file=sys.stderr)
            modules[key] = train(config, progress=not args.quiet)
        pipes = {None: CustomCrafterPipeline(load_base_model("shapes"))}
        for key, path in modules.items():
            model = load_base_model("shapes")  # one model per module: each injects its LoRA
            pipes[key] = CustomCrafterPipeline(model, SpatialSubjectModule.load(path, model))
        references = reference_images(SUBJECTS[name])
        prompts = [subject_prompt(name, m, b) for m, b in PROMPT_PARTS]
        for label, key, schedule in METHODS:
            texts = prompts if key else [strip_tokens(p) for p in prompts]
            for seed in range(args.seeds):
                out = pipes[key](texts, schedule=schedule, seed=1000 + seed, progress=False)
                for text, video in zip(texts, out.videos, strict=True):
                    score = score_clip(to_uint8_frames(video), text, references)
                    rows.append({"subject": name, "method": label, "seed": seed, "score": score})
            print(f"  {name}: {label} done", file=sys.stderr)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per method, the shapes summary of its clips and the background accuracy on the
    backgrounds the reference images never show."""
    table = []
    for label, *_ in METHODS:
        scores = [r["score"] for r in rows if r["method"] == label]
        new = [s for s in scores if s.wanted.background not in REFERENCE_BACKGROUNDS]
        summary = summarise(scores)
        summary["new_background_accuracy"] = summarise(new)["background_accuracy"]
        table.append({"method": label, **summary})
    return table


def markdown(table: list[dict], rows: list[dict], args, seconds: float) -> str:
    subjects = sorted({r["subject"] for r in rows})
    lines = [
        "# The paper's claims on the shapes world",
        "",
        "Produced by:",
        "",
        "```",
        "python benchmarks/shapes_claims.py " + " ".join(args.argv),
        "```",
        "",
        f"Subjects: {', '.join(subjects)}; {len(PROMPT_PARTS)} prompts each "
        f"({', '.join(f'{m} on {b}' for m, b in PROMPT_PARTS)}), {args.seeds} seeds, "
        f"{args.steps} subject-training steps, DDIM 50 steps, guidance 5.0 (the shapes "
        f"model's defaults). {len(rows)} videos in {seconds / 60:.0f} minutes.",
        "",
        "| method | motion acc. | px/frame (moving) | px/frame (still) "
        "| subject similarity | new-background acc. |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in table:
        lines.append(
            f"| {t['method']} | {t['motion_accuracy']:.0%} | {t['displacement_moving']:.2f} "
            f"| {t['displacement_still']:.2f} | {t['subject_similarity']:.3f} "
            f"| {t['new_background_accuracy']:.0%} |"
        )
    lines += [
        "",
        "- motion acc.: share of clips whose detected direction (least-squares centroid "
        "velocity) is the prompt's; px/frame: mean centroid displacement per frame.",
        "- subject similarity: palette-histogram intersection of the object's pixels with the "
        "reference images' (1 = the subject's colors in the subject's proportions).",
        "- new-background acc.: share of clips on a background absent from the references "
        "(purple) whose detected background is the prompt's.",
        "",
        "Per subject:",
        "",
        "| subject | method | motion acc. | subject similarity | new-background acc. |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in subjects:
        for t in summarize([r for r in rows if r["subject"] == name]):
            lines.append(
                f"| {name} | {t['method']} | {t['motion_accuracy']:.0%} "
                f"| {t['subject_similarity']:.3f} | {t['new_background_accuracy']:.0%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="subject-training steps")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--subjects", nargs="*", help="default: every bundled subject")
    parser.add_argument("--out", default="docs/results/shapes.md")
    parser.add_argument("--work", help="folder for the subject modules (default: a temp dir)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    began = time.perf_counter()
    rows = run(args)
    table = summarize(rows)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.write_text(markdown(table, rows, args, time.perf_counter() - began))
    videos = [{**{k: v for k, v in r.items() if k != "score"}, **r["score"].as_row()} for r in rows]
    write_json(out.with_suffix(".json"), {"summary": table, "videos": videos})
    print(out.read_text())


if __name__ == "__main__":
    main()
