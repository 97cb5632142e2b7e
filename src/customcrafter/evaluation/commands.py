"""The ``eval`` and ``benchmark`` commands, as argparse pieces: ``add_*_parser(subparsers)``
adds the subcommand, ``run_*(args)`` runs it (errors are ``UserError``).

    customcrafter eval --video a.mp4 --video b.mp4 --prompt "a <new1> dog running" \\
        --references data/dog --clip --dino --json scores.json
    customcrafter benchmark benchmarks/specs/paper_table1.yaml --data-root ~/datasets \\
        --set vc2_checkpoint=~/ckpt/vc2/model.ckpt
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import UserError
from .metrics import DEFAULT_CLIP, DEFAULT_DINO

EVAL_COLUMNS = (
    ("clip_t", "CLIP-T"),
    ("clip_i", "CLIP-I"),
    ("dino_i", "DINO-I"),
    ("t_cons", "T.Cons"),
    ("dynamic", "dynamic"),
    ("flow_magnitude", "flow px/frame"),
)


# --- eval ----------------------------------------------------------------------------------
def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="score videos: CLIP-T, CLIP-I, DINO-I, T.Cons, dynamic degree, flow",
        description="Score generated videos with the paper's metrics (mean over frames; "
        "CLIP-I and DINO-I against every reference image).",
    )
    parser.add_argument(
        "--video", action="append", required=True, help="an .mp4 or .gif (repeat for several)"
    )
    parser.add_argument(
        "--prompt", help="the prompt the videos were made from, for CLIP-T ('<...>' tokens dropped)"
    )
    parser.add_argument("--references", help="folder of the subject's images, for CLIP-I / DINO-I")
    parser.add_argument(
        "--clip",
        nargs="?",
        const=DEFAULT_CLIP,
        help=f"CLIP model (hub id or save_pretrained folder); --clip alone: {DEFAULT_CLIP}. "
        "Without it CLIP-T, CLIP-I and T.Cons are not computed",
    )
    parser.add_argument(
        "--dino",
        nargs="?",
        const=DEFAULT_DINO,
        help=f"DINO model; --dino alone: {DEFAULT_DINO}. Without it DINO-I is not computed",
    )
    parser.add_argument("--no-motion", action="store_true", help="skip dynamic degree and flow")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    return parser


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def run_eval(args: argparse.Namespace) -> dict:
    """Score ``args.video``; prints a table and returns ``{"videos": [...], "mean": {...}}``."""
    from ..io.files import write_json
    from ..io.video import read_video
    from ..training.data import list_images, load_image
    from .metrics import ClipScorer, DinoScorer, evaluate_video

    references = None
    if args.references:
        references = [load_image(p) for p in list_images(args.references, "reference image")]
    if (args.clip or args.dino) and not (args.prompt or references):
        raise UserError("give --prompt (for CLIP-T) and/or --references (for CLIP-I, DINO-I)")
    if args.dino and not references:
        raise UserError("DINO-I needs --references, the folder of the subject's images")
    if not (args.clip or args.dino) and args.no_motion:
        raise UserError("nothing to compute: give --clip and/or --dino, or drop --no-motion")
    device = _device(args.device)
    clip = ClipScorer.from_pretrained(args.clip, device=device) if args.clip else None
    dino = DinoScorer.from_pretrained(args.dino, device=device) if args.dino else None

    results = []
    for video in args.video:
        frames = read_video(video)
        scores = evaluate_video(
            frames, args.prompt, references, clip=clip, dino=dino, motion=not args.no_motion
        )
        values = {key: getattr(scores, key) for key, _ in EVAL_COLUMNS}
        results.append({"video": str(video), "frames": len(frames), **values})
    keys = [k for k, _ in EVAL_COLUMNS if any(r[k] is not None for r in results)]
    mean = {}
    for key in keys:
        numbers = [float(r[key]) for r in results if r[key] is not None]
        mean[key] = sum(numbers) / len(numbers) if numbers else None
    print(format_eval_table(results, keys, mean))
    output = {
        "prompt": args.prompt,
        "references": args.references,
        "clip": args.clip,
        "dino": args.dino,
        "videos": results,
        "mean": mean,
    }
    if args.json:
        write_json(Path(args.json), output)
    return output


def format_eval_table(results: list[dict], keys: list[str], mean: dict) -> str:
    labels = dict(EVAL_COLUMNS)
    header = ["video", *[labels[k] for k in keys]]

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if not math.isfinite(value) else f"{value:.4f}"

    rows = [[str(r["video"]), *[cell(r[k]) for k in keys]] for r in results]
    if len(results) > 1:
        rows.append(["mean", *[cell(mean[k]) for k in keys]])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)) for row in rows]
    if "dynamic" in keys and len(results) > 1:
        lines.append("(mean of 'dynamic' = the dynamic degree: the share of dynamic videos)")
    return "\n".join(lines)


# --- benchmark -----------------------------------------------------------------------------
def add_benchmark_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark",
        help="run a benchmark spec: train, generate, score and report (resumable)",
        description="Run the benchmark a spec file describes. Finished modules, videos and "
        "scores are kept: run the same command again to continue an interrupted run.",
    )
    parser.add_argument("spec", help="benchmark spec (YAML or TOML), e.g. benchmarks/specs/*.yaml")
    parser.add_argument(
        "--data-root", help="folder holding the subjects' image folders (replaces the spec's)"
    )
    parser.add_argument("--output-dir", help="where results go (replaces the spec's output_dir)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a spec variable (vc2_checkpoint=/path/model.ckpt) or a spec key "
        "(generation.num_inference_steps=25, methods.NAME.train.max_train_steps=500); "
        "repeatable",
    )
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="sampling precision (default: float16 on cuda, else float32)",
    )
    parser.add_argument(
        "--reports-only",
        action="store_true",
        help="only rewrite the reports from the finished videos' cached scores",
    )
    return parser


def run_benchmark_command(args: argparse.Namespace) -> Path:
    from .benchmark import load_spec, run_benchmark, write_reports

    reports_only = getattr(args, "reports_only", False)
    spec = load_spec(
        args.spec,
        data_root=getattr(args, "data_root", None),
        overrides=list(getattr(args, "overrides", None) or []),
        output_dir=getattr(args, "output_dir", None),
    )
    if reports_only:
        out = write_reports(spec)
    else:
        dtype = None
        if getattr(args, "dtype", None):
            import torch

            dtype = getattr(torch, args.dtype)
        out = run_benchmark(
            spec,
            device=getattr(args, "device", None),
            progress=not getattr(args, "quiet", False),
            dtype=dtype,
        )
    print(f"reports in {out}: summary.md, summary.csv, per_video.csv, index.html, charts/")
    return out
