"""``customcrafter eval``: score videos with the paper's metrics.

    customcrafter eval --video a.mp4 --video b.mp4 --prompt "a <new1> dog running" \\
        --references data/dog --clip --dino --json scores.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..config import DEFAULT_CLIP, DEFAULT_DINO, default_device
from ..errors import UserError

EVAL_COLUMNS = (
    ("clip_t", "CLIP-T"),
    ("clip_i", "CLIP-I"),
    ("dino_i", "DINO-I"),
    ("t_cons", "T.Cons"),
    ("dynamic", "dynamic"),
    ("flow_magnitude", "flow px/frame"),
)


def add_parser(subparsers) -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--identifier",
        metavar="WORD",
        help="the subject's identifier word (a subject trained with --identifier), dropped "
        "from the prompt for CLIP-T as a '<...>' token is",
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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> dict:
    """Score ``args.video``; prints a table and returns ``{"videos": [...], "mean": {...}}``."""
    from ..evaluation import ClipScorer, DinoScorer, evaluate_video
    from ..io.files import check_output_file, write_json
    from ..io.images import list_images, load_image
    from ..io.video import read_video

    if args.json:  # before any scoring
        check_output_file(args.json, args.overwrite, (".json",), reads=args.video, what="--json")
    references = None
    if args.references:
        references = [load_image(p) for p in list_images(args.references, "reference image")]
    if (args.clip or args.dino) and not (args.prompt or references):
        raise UserError("give --prompt (for CLIP-T) and/or --references (for CLIP-I, DINO-I)")
    if args.dino and not references:
        raise UserError("DINO-I needs --references, the folder of the subject's images")
    if not (args.clip or args.dino) and args.no_motion:
        raise UserError("nothing to compute: give --clip and/or --dino, or drop --no-motion")
    device = default_device(args.device)
    clip = ClipScorer.from_pretrained(args.clip, device=device) if args.clip else None
    dino = DinoScorer.from_pretrained(args.dino, device=device) if args.dino else None

    results = []
    videos = [read_video(video) for video in args.video]  # every file checked before scoring
    for video, frames in zip(args.video, videos, strict=True):
        scores = evaluate_video(
            frames,
            args.prompt,
            references,
            clip=clip,
            dino=dino,
            motion=not args.no_motion,
            identifier=args.identifier,
        )
        values = {key: getattr(scores, key) for key, _ in EVAL_COLUMNS}
        results.append({"video": str(video), "frames": len(frames), **values})
    keys = [k for k, _ in EVAL_COLUMNS if any(r[k] is not None for r in results)]
    if not keys:
        raise UserError(
            "no metric applies to these videos: motion needs two frames or more, "
            "CLIP-T / CLIP-I / T.Cons need --clip, DINO-I needs --dino"
        )
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
