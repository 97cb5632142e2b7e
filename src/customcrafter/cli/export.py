"""``customcrafter export``: a Wan or LTX-2 subject module as a ComfyUI or diffusers LoRA file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError
from ..sampling.dwvs import LAMBDA_L, LAMBDA_S, DynamicWeightSchedule, K
from .args import add_config_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a Wan or LTX-2 subject module as a LoRA file for ComfyUI or diffusers",
        description="Write a Wan or LTX-2 subject module as a LoRA file: 'comfyui' (the "
        "original module names: Wan's diffusion_model.blocks.N.self_attn.q ..., LTX-2's "
        "diffusion_model.transformer_blocks.N.attn1.to_q ..., with alpha) or 'diffusers' "
        "(what WanPipeline's or LTX2Pipeline's load_lora_weights reads). The LoRA scale is "
        "folded in: load it at strength 1.0 for the module at weight 1.0.",
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
    parser.add_argument(
        "--no-workflow",
        action="store_true",
        help="with --format comfyui: do not write the DWVS workflow (OUT.workflow.json: a "
        "ComfyUI graph of core nodes that runs the LoRA at --lambda-s for the first --k steps "
        "and at --lambda-l after)",
    )
    parser.add_argument("--prompt", help="the workflow's prompt (default: the instance prompt)")
    add_config_arguments(parser, DynamicWeightSchedule, only=("lambda_s", "lambda_l", "k"))
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..io.files import check_output_file
    from ..subject import read_metadata
    from ..subject.export import export_subject

    workflow = None
    if args.format == "comfyui" and not args.no_workflow:
        workflow = Path(args.out).with_suffix(".workflow.json")
        check_output_file(workflow, args.overwrite, (".json",), what="workflow")
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
    metadata = read_metadata(args.subject)
    identifier = metadata.identifier
    named = f"; name the subject {identifier!r} in prompts" if identifier else ""
    print(f"wrote {out} ({args.format} LoRA{named})")
    if workflow is not None:
        _write_workflow(args, metadata, out, workflow)


def _write_workflow(args, metadata, lora: Path, path: Path) -> None:
    """The DWVS graph for ComfyUI beside the LoRA (one-expert Wan models)."""
    from ..io.files import write_json
    from ..models.wan import release_defaults_of
    from ..models.wan_lora import WanLoraNaming
    from ..sampling.comfyui import WorkflowSettings, dwvs_workflow

    wan = all(WanLoraNaming().owns(t) for t in metadata.targets)
    if not wan or "A14B" in metadata.base_model or args.expert:
        print("no workflow: the DWVS graph is written for one-expert Wan models (not A14B)")
        return
    defaults = release_defaults_of(metadata.base_model)
    schedule = DynamicWeightSchedule(
        args.lambda_s if args.lambda_s is not None else LAMBDA_S,
        args.lambda_l if args.lambda_l is not None else LAMBDA_L,
        args.k if args.k is not None else K,
    )
    schedule.check_steps(defaults.num_inference_steps)
    named = metadata.identifier or " ".join(metadata.initializer_words.values())
    prompt = args.prompt or metadata.training.get("instance_prompt") or f"video of a {named}"
    if metadata.tokens:  # the LoRA file carries no token: the class word instead
        prompt = metadata.base_prompt(prompt)
    settings = WorkflowSettings(
        lora.name, prompt, metadata.base_model, defaults,
        schedule.lambda_s, schedule.lambda_l, schedule.k,
    )  # fmt: skip
    write_json(path, dwvs_workflow(settings))
    print(
        f"wrote {path} (ComfyUI workflow: the LoRA at {schedule.lambda_s} for steps 0-"
        f"{schedule.k}, {schedule.lambda_l} after; put {lora.name} in models/loras)"
    )


class ExportInterrupted(UserError):
    """Ctrl-C during an export; the message says whether the file was written."""

    exit_code = 130


def _what_is_left(out: Path, started: float) -> str:
    """Writes are atomic: the file is either the complete new one or as it was."""
    if out.is_file() and out.stat().st_mtime >= started:
        return f"interrupted after {out} was written: it is complete"
    state = "as it was" if out.exists() else "not written"
    return f"interrupted before {out} was complete: it is {state}"
