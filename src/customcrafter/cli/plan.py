"""``customcrafter plan``: what a training or generation job needs in GPU memory, each way to
run it, and the fastest way that fits, before any weight is loaded."""

from __future__ import annotations

import argparse
import json

from ..config import SIDE, TrainConfig, help_of
from .args import bounded

SHOWN = 12


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="estimate the GPU memory of a job and pick the fastest way that fits (no weights "
        "loaded, no GPU needed)",
    )
    parser.add_argument(
        "--base", required=True, help="a release's hub id, a Wan folder or cached hub id, tiny"
    )
    parser.add_argument("--task", required=True, choices=["train", "generate"])
    parser.add_argument("--height", type=bounded(int, **SIDE), help="default: the model's")
    parser.add_argument("--width", type=bounded(int, **SIDE), help="default: the model's")
    parser.add_argument(
        "--num-frames",
        type=bounded(int, minimum=1, maximum=1000),
        help="frames (training: of each static clip; default: the model's)",
    )
    parser.add_argument("--identifier", metavar="WORD", help=help_of(TrainConfig, "identifier"))
    parser.add_argument(
        "--vram",
        help="GB of GPU memory to plan for (default: the free memory of the visible GPU)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..errors import UserError
    from ..planning.plan import Job, estimate, nothing_fits, parse_vram, visible_vram

    vram = parse_vram(args.vram) if args.vram is not None else visible_vram()
    job = Job(
        args.base,
        args.task,
        args.height,
        args.width,
        args.num_frames,
        identifier=args.identifier is not None,
    )
    plan = estimate(job, vram)
    if args.json:
        print(json.dumps(plan.as_json(), indent=2))
    else:
        _print(plan)
    if not plan.fits:
        raise UserError(nothing_fits(plan))


def _print(plan) -> None:
    h, w, f = plan.size
    print(f"{plan.job.base}: {plan.job.task} at {w}x{h}, {f} frames")
    for name, count in plan.parameters.items():
        print(f"  {name:<14} {count / 1e9:7.3f} B parameters")
    data = plan.as_json()
    print(f"ways (estimated peak GB, time relative to the fastest), {SHOWN} fastest:")
    for way in data["ways"][:SHOWN]:
        print(f"  {way['peak_gb']:7.2f} GB  {way['slowdown']:5.2f}x  {' '.join(way['settings'])}")
    for note in plan.notes:
        print(f"note: {note}")
    if plan.fits:
        print(f"chosen for {plan.vram:g} GB ({data['usable_gb']} GB usable):")
        print(f"  {' '.join(data['settings'])}")
        print(f"  estimated peak {data['peak_gb']} GB, {data['slowdown']}x the fastest way")
