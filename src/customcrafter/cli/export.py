"""``customcrafter export``: a Wan subject module as a ComfyUI or diffusers LoRA file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a Wan subject module as a LoRA file for ComfyUI or diffusers",
        description="Write a Wan subject module as a LoRA file: 'comfyui' (the original Wan "
        "module names, diffusion_model.blocks.N.self_attn.q ..., with alpha) or 'diffusers' "
        "(what WanPipeline.load_lora_weights reads). The LoRA scale is folded in: load it at "
        "strength 1.0 for the module at weight 1.0.",
    )
    parser.add_argument("subject", help="subject module: training output folder or .safetensors")
    parser.add_argument("--format", choices=["comfyui", "diffusers"], default="comfyui")
    parser.add_argument("--out", required=True, help="the LoRA file to write (.safetensors)")
    parser.add_argument(
        "--drop-token",
        action="store_true",
        help="export the LoRA of a subject trained with a new token (<new1>) without the "
        "token, which LoRA files cannot carry; prompts then name it by its class word "
        "(a subject trained with --identifier WORD needs no such thing)",
    )
    parser.add_argument(
        "--expert",
        choices=["high", "low"],
        help="Wan 2.2 A14B subject adapting both experts: the expert this file is for "
        "(high: transformer, low: transformer_2); export each",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..subject import read_metadata
    from ..subject.export import export_subject

    started = time.time()
    try:
        out = export_subject(
            args.subject,
            args.out,
            args.format,
            drop_token=args.drop_token,
            overwrite=args.overwrite,
            expert=args.expert,
        )
    except KeyboardInterrupt:
        raise ExportInterrupted(_what_is_left(Path(args.out), started)) from None
    identifier = read_metadata(args.subject).identifier
    named = f"; name the subject {identifier!r} in prompts" if identifier else ""
    print(f"wrote {out} ({args.format} LoRA{named})")


class ExportInterrupted(UserError):
    """Ctrl-C during an export; the message says whether the file was written."""

    exit_code = 130


def _what_is_left(out: Path, started: float) -> str:
    """Writes are atomic: the file is either the complete new one or as it was."""
    if out.is_file() and out.stat().st_mtime >= started:
        return f"interrupted after {out} was written: it is complete"
    state = "as it was" if out.exists() else "not written"
    return f"interrupted before {out} was complete: it is {state}"
