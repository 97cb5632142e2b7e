"""``customcrafter generate``: a video, with or without a subject module."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import fields

from ..config import (
    DTYPES,
    STORAGE,
    SampleConfig,
    TrainConfig,
    check_value,
    default_device,
    default_dtype,
    field_named,
    flag_of,
    help_of,
)
from ..errors import UserError
from ..sampling.dwvs import CONSTANT_WEIGHT_HELP, DynamicWeightSchedule
from .args import add_config_arguments, config_values


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a video, with or without a subject module"
    )
    parser.add_argument("--prompt", help="e.g. 'a <new1> dog surfing a wave'")
    parser.add_argument("--out", help="output video, .mp4 or .gif")
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help="many videos: a file of prompts, one a line (with --output-dir; under "
        "accelerate launch the videos are split across the processes)",
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        metavar="LIST",
        help="with --prompts: comma-separated seeds, a video each per prompt (default: --seed)",
    )
    parser.add_argument(
        "--output-dir",
        help="with --prompts: the folder of the videos and their manifest.json",
    )
    parser.add_argument("--gif", action="store_true", help="also write a .gif beside the .mp4")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument(
        "--subject", help="subject module: training output folder or .safetensors file"
    )
    parser.add_argument(
        "--no-subject", action="store_true", help="sample the plain base model (baseline)"
    )
    parser.add_argument(
        "--base", help="base model (default: the one the subject module was trained on)"
    )
    parser.add_argument("--base-config", help=help_of(TrainConfig, "base_config"))
    add_config_arguments(parser, DynamicWeightSchedule)
    parser.add_argument("--constant-weight", type=float, help=CONSTANT_WEIGHT_HELP)
    add_config_arguments(parser, SampleConfig)
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="default: float16 on cuda, else float32")
    parser.add_argument("--vae-chunk-size", type=int, help=help_of(TrainConfig, "vae_chunk_size"))
    for name in ("weights_dtype", "text_encoder_dtype"):
        flag = flag_of(field_named(TrainConfig, name))
        parser.add_argument(flag, choices=STORAGE, help=help_of(TrainConfig, name))
    parser.add_argument(
        "--offload",
        choices=["model", "sequential"],
        help="keep weights in CPU memory for small GPUs: 'model' moves one component at a "
        "time to the GPU, 'sequential' one layer at a time (least memory, slowest)",
    )
    add_config_arguments(parser, TrainConfig, only=("offload_blocks",))
    parser.add_argument(
        "--vram",
        metavar="auto|GB",
        help="fit the generation in this much GPU memory (auto: the visible GPU's free "
        "memory): the memory plan (customcrafter plan) chooses --weights-dtype, "
        "--text-encoder-dtype, --offload-blocks, --unmerged and --offload, replacing those "
        "given, and says what it chose",
    )
    parser.add_argument(
        "--context-parallel",
        choices=["ulysses", "ring"],
        help="one video over all the GPUs accelerate launch (or torchrun) started: the "
        "video's tokens split among them (diffusers' context parallelism; Wan bases). "
        "ulysses exchanges attention heads (the heads must divide by the GPUs), ring passes "
        "keys and values round (any head count); both need the tokens to divide by the GPUs",
    )
    parser.add_argument(
        "--unmerged",
        action="store_true",
        help="run LoRA layers unmerged instead of folding them (slower)",
    )
    parser.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="load a subject module onto a base model with other weights",
    )
    parser.set_defaults(run=run)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers, got {text!r}") from None
    if not seeds or any(not 0 <= s < 2**63 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds from 0 to 2**63 - 1, got {text!r}")
    return seeds


def run(args: argparse.Namespace) -> None:
    from ..io.video import check_output_path, write_video
    from ..processes import device as process_device

    many = args.prompts is not None
    if many and args.context_parallel:
        raise UserError(
            "--context-parallel makes one video with all the processes, --prompts splits "
            "the videos among them: choose one"
        )
    if many and (args.prompt or args.out or args.gif):
        raise UserError("--prompts writes into --output-dir: drop --prompt, --out and --gif")
    if not many and (args.seeds or args.output_dir):
        raise UserError("--seeds and --output-dir go with --prompts FILE")
    if many and not args.output_dir:
        raise UserError("--prompts needs --output-dir, the folder for its videos")
    if not many and not (args.prompt and args.out):
        raise UserError("give --prompt and --out (or --prompts FILE and --output-dir)")
    if many:
        return _run_many(args)
    out = check_output_path(args.out, args.overwrite)
    gif = out.with_suffix(".gif") if args.gif and out.suffix == ".mp4" else None
    if gif is not None:
        check_output_path(gif, args.overwrite)
    sample, schedule = _settings(args)
    main = True
    if args.context_parallel:
        main = _check_context_parallel(args)
        pipe = _pipeline(args, sample, default_device(process_device(args.device)))
        _context_parallel(pipe, sample, args.context_parallel)
    else:
        pipe = _pipeline(args, sample, default_device(args.device))
    result = pipe(
        args.prompt,
        schedule=schedule,
        config=sample,
        fold_lora=not args.unmerged,
        progress=not args.quiet and main,
    )
    if not main:  # every process holds the whole video; the main one writes it
        return
    write_video(out, result.videos[0], result.fps, **result.sound(0))
    print(f"{schedule.describe()}: wrote {out}")
    if gif is not None:
        write_video(gif, result.videos[0], result.fps)
        print(f"wrote {gif}")


def _settings(args: argparse.Namespace):
    """The sampler's settings and the weight schedule, checked."""
    sample = SampleConfig(**config_values(args, SampleConfig))
    sample.validate()
    schedule = _schedule(args)
    if sample.num_inference_steps is not None:
        schedule.check_steps(sample.num_inference_steps)
    return sample, schedule


def _check_context_parallel(args: argparse.Namespace) -> bool:
    """Refuse ``--context-parallel`` where it cannot run, before anything loads; return
    whether this is the main process."""
    import torch

    from ..processes import state

    group = state()
    if group.num_processes < 2:
        raise UserError(
            "--context-parallel splits one video over several GPUs: start the command with "
            "accelerate launch --multi_gpu --num_processes N -m customcrafter.cli generate ... "
            "(or torchrun --nproc_per_node N -m customcrafter.cli generate ...)"
        )
    if not torch.accelerator.is_available() or (args.device or "").startswith("cpu"):
        raise UserError(
            "--context-parallel runs on GPUs only (diffusers places each process on one); "
            "on CPUs spread several videos over the processes instead (--prompts)"
        )
    if args.offload or args.offload_blocks or args.vram is not None:
        raise UserError(
            "--context-parallel keeps the whole model on every GPU: drop --offload, "
            "--offload-blocks and --vram (or use --weights-dtype float8 to fit it)"
        )
    return group.is_main_process


def _context_parallel(pipe, sample: SampleConfig, mode: str) -> None:
    """Split the denoiser of ``pipe`` for videos of ``sample``'s size over the processes."""
    from ..processes import state

    model, defaults = pipe.model, pipe.model.defaults
    shape = model.latent_shape(
        1,
        sample.num_frames or defaults.num_frames,
        sample.height or defaults.height,
        sample.width or defaults.width,
    )
    model.enable_context_parallel(mode, state().num_processes, shape)


def _run_many(args: argparse.Namespace) -> None:
    """``--prompts FILE``: every (prompt, seed) pair, split across the launched processes."""
    from pathlib import Path

    from ..processes import device as process_device
    from ..sampling.batch import generate_many, plan_videos, read_prompts

    prompts = read_prompts(args.prompts)
    sample, schedule = _settings(args)
    out = Path(args.output_dir)
    jobs = plan_videos(prompts, args.seeds or [sample.seed], out, args.overwrite)
    pipe = _pipeline(args, sample, default_device(process_device(args.device)))
    settings = {
        "base": pipe.model.name,
        "subject": None if args.no_subject else str(args.subject),
        "schedule": schedule.describe(),
        **{k: v for k, v in dataclasses.asdict(sample).items() if k != "seed"},
    }
    manifest = generate_many(pipe, jobs, out, schedule, sample, settings,
                             fold_lora=not args.unmerged, progress=not args.quiet)  # fmt: skip
    if manifest is not None:
        print(f"{schedule.describe()}: wrote {len(jobs)} videos and {manifest}")


def _pipeline(args: argparse.Namespace, sample: SampleConfig, device: str):
    from ..sampling import CustomCrafterPipeline

    if args.no_subject and args.subject:
        raise UserError("--no-subject and --subject exclude each other")
    if not args.no_subject and not args.subject:
        raise UserError(
            "give --subject (a trained subject module) or --no-subject for the plain base model"
        )
    if args.no_subject and not args.base:
        raise UserError("--no-subject needs --base")
    if args.vram is not None:
        _fit(args, sample)
    return CustomCrafterPipeline.from_pretrained(
        args.base,
        None if args.no_subject else args.subject,
        device=device,
        dtype=default_dtype(args.dtype, device),
        strict=not args.allow_base_mismatch,
        base_config=args.base_config,
        vae_chunk_size=args.vae_chunk_size,
        offload=args.offload,
        weights_dtype=args.weights_dtype,
        text_encoder_dtype=args.text_encoder_dtype,
        offload_blocks=args.offload_blocks or 0,
    )


def _fit(args: argparse.Namespace, sample: SampleConfig) -> None:
    """``--vram``: the memory levers of ``args`` set as the plan chooses them."""
    from ..planning.plan import Job, choose, describe, parse_vram
    from ..subject import read_metadata

    base = args.base or read_metadata(args.subject).base_model
    job = Job(
        base,
        "generate",
        sample.height,
        sample.width,
        sample.num_frames,
        num_inference_steps=sample.num_inference_steps or 50,
    )
    plan = choose(job, parse_vram(args.vram))
    way = plan.chosen.way
    args.weights_dtype, args.text_encoder_dtype = way.weights_dtype, way.text_encoder_dtype
    args.offload_blocks, args.unmerged = way.offload_blocks, way.unmerged
    args.offload = "model" if way.cpu_offload else None
    args.dtype = "bfloat16"
    print(describe(plan))


def _schedule(args: argparse.Namespace) -> DynamicWeightSchedule:
    """The weight schedule the flags ask for, its numbers checked under their flags' names."""
    if args.no_subject:
        return DynamicWeightSchedule.off()
    if args.constant_weight is not None:
        weight = field_named(DynamicWeightSchedule, "lambda_l")
        check_value(weight, args.constant_weight, "--constant-weight")
        return DynamicWeightSchedule.constant(args.constant_weight, cond_only=args.cond_only)
    values = config_values(args, DynamicWeightSchedule)
    for f in fields(DynamicWeightSchedule):
        check_value(f, values.get(f.name), flag_of(f))
    return DynamicWeightSchedule(**values)
