"""``customcrafter convert``: an original checkpoint into fast-loading safetensors."""

from __future__ import annotations

import argparse

from ..config import DTYPES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an original checkpoint into fast-loading safetensors"
    )
    parser.add_argument("kind", choices=["videocrafter2"], help="the checkpoint's model")
    parser.add_argument("checkpoint", help="the original model.ckpt")
    parser.add_argument("out_dir", help="folder to write; use it later as --base OUT_DIR")
    parser.add_argument("--config", help="original YAML config (default: read off the tensors)")
    parser.add_argument(
        "--tokenizer",
        help="folder or hub id of the CLIP tokenizer to bundle "
        "(default: $CUSTOMCRAFTER_OPENCLIP_TOKENIZER or the ViT-H-14 one in the HF cache)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="store the weights in this precision (default: as in the checkpoint)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..models.registry import convert_checkpoint

    out = convert_checkpoint(
        args.kind,
        args.checkpoint,
        args.out_dir,
        config=args.config,
        tokenizer=args.tokenizer,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}; use it with --base {out}")
