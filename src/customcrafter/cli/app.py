"""``customcrafter app``: the local web page (photos in, videos out)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from ..errors import UserError
from .args import bounded

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "app",
        help="a local web page: learn a subject from photos, generate and compare videos",
        description="A local web page that runs the whole method: learn a subject from 3-10 "
        "photos, generate with Dynamic Weighted Video Sampling beside the base model and "
        "constant weight, score the videos. One job at a time on the device; the others "
        "wait in a queue. Needs the app extra: pip install -e '.[app]'.",
    )
    parser.add_argument(
        "--base", default="shapes", help="base model, as for train (default: the shapes model)"
    )
    parser.add_argument(
        "--output-dir",
        default="customcrafter-app",
        help="where uploads, subjects and videos are written (default: customcrafter-app)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    parser.add_argument(
        "--port",
        type=bounded(int, minimum=1, maximum=65535),
        default=7860,
        help="port to serve on (default: 7860; 1 to 65535)",
    )
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--clip", help="CLIP model (hub id or folder) for the Score panel")
    parser.add_argument("--dino", help="DINO model (hub id or folder) for the Score panel")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..app.workspace import Workspace
    from ..models.registry import check_base_model

    check_base_model(args.base)  # at start, not at the first Learn
    _check_port_free(args.host, args.port)
    workspace = Workspace(args.output_dir)
    # Gradio keeps uploads in its temporary folder first: make that the user's folder
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workspace.root / ".uploads"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from ..app.jobs import AppSession
        from ..app.ui import build_app
    except ImportError as exc:
        raise UserError(
            f"the app needs its extra ({exc.name} is missing): pip install -e '.[app]'"
        ) from None
    if args.host not in LOOPBACK:
        print(
            f"warning: bound to {args.host}: anyone who can reach this machine on port "
            f"{args.port} can use the app and read {workspace.root}",
            file=sys.stderr,
        )
    session = AppSession(workspace, args.base, args.device, args.clip, args.dino)
    demo = build_app(session)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        allowed_paths=[str(workspace.root)],
        show_error=True,
        quiet=False,
    )


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port that another program holds (or the system does not allow) before the
    page starts."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}); another program may hold "
            "the port: pass --port with another one"
        ) from None
