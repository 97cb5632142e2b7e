"""The ``customcrafter`` command: ``train``, ``generate``, ``convert``, ``shapes``, ``eval``,
``benchmark`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from .config import TrainConfig, load_config_file, merge_config
from .errors import UserError

TRAIN_HELP = {
    "base": "base model: 'shapes' (built in), 'tiny', a diffusers text-to-video folder / hub id, "
    "'videocrafter2:/path/model.ckpt' or a converted VideoCrafter2 folder",
    "base_config": "original YAML config of a videocrafter2: checkpoint (default: read off the tensors)",
    "vae_chunk_size": "frames per VAE call; lower it to save memory (default: the model's)",
    "instance_data_dir": "folder with 3-10 photos of the subject (jpg, png, webp)",
    "instance_prompt": "prompt with the subject's new token, e.g. 'video of a <new1> dog'",
    "class_prompt": "prompt for the subject's class, e.g. 'video of a dog' (prior preservation)",
    "output_dir": "where the subject module and checkpoints are written",
    "class_data_dir": "folder of class images; when absent they are generated with the base model and cached",
    "num_class_images": "class images to generate when --class-data-dir is absent",
    "class_sampling_steps": "DDIM steps for each generated class image",
    "prior_loss_weight": "weight of the class prior-preservation loss (0 turns it off)",
    "lora_targets": "layer preset: spatial-qkv (paper), spatial-cross-qkv (the paper's ablation without self-attention), spatial-cross-kv (Custom Diffusion), spatial-qkvo",
    "lora_target_override": "comma-separated projections inside each spatial block, e.g. attn1.to_q,attn2.to_v",
    "rank": "LoRA rank",
    "initializer_words": "TOKEN=WORD: start a token's embedding from WORD (default: the word after the token)",
    "train_frames": "frames in each static training clip",
    "height": "training height (default: the base model's)",
    "width": "training width (default: the base model's)",
    "augment": "Custom Diffusion rescale augmentation with masked loss, and horizontal flips",
    "learning_rate": "AdamW learning rate",
    "scale_lr": "multiply the learning rate by GPUs x batch size x accumulation steps",
    "loss": "mse (the paper) or l1 (the authors' code)",
    "lr_scheduler": "constant, constant_with_warmup, linear, cosine, ...",
    "max_train_steps": "optimizer steps",
    "gradient_checkpointing": "trade compute for memory in the UNet",
    "mixed_precision": "no, fp16 or bf16",
    "checkpointing_steps": "save a resumable checkpoint every N steps",
    "checkpoints_total_limit": "keep only the newest N checkpoints",
    "resume_from_checkpoint": "'latest' or a checkpoint folder",
    "overwrite": "replace an existing subject module and its checkpoints in --output-dir",
}


def _add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per config field; unset options keep the config file's or default value."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        help_text = TRAIN_HELP.get(f.name, "")
        default = f.default if f.default is not MISSING else None
        if default not in (None, ""):
            help_text += f" (default: {default})"
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind.startswith("dict"):
            parser.add_argument(
                "--initializer-word", action="append", metavar="TOKEN=WORD", **common
            )
        elif kind.startswith("list"):
            parser.add_argument(
                flag, type=lambda s: [x.strip() for x in s.split(",") if x.strip()], **common
            )
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, **common)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, **common)
        else:
            parser.add_argument(flag, type=str, **common)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="customcrafter",
        description="Subject-customized text-to-video generation (CustomCrafter).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="learn a subject from a few photos")
    train.add_argument("--config", help="YAML, JSON or TOML file of settings (options override it)")
    _add_config_arguments(train, TrainConfig)

    gen = sub.add_parser("generate", help="generate a video, with or without a subject module")
    gen.add_argument(
        "--base", help="base model (default: the one the subject module was trained on)"
    )
    gen.add_argument("--base-config", help=TRAIN_HELP["base_config"])
    gen.add_argument(
        "--subject", help="subject module: training output folder or .safetensors file"
    )
    gen.add_argument(
        "--no-subject", action="store_true", help="sample the plain base model (baseline)"
    )
    gen.add_argument("--prompt", required=True, help="e.g. 'a <new1> dog surfing a wave'")
    gen.add_argument(
        "--lambda-s", type=float, default=0.4, help="weight while motion is laid out (default 0.4)"
    )
    gen.add_argument(
        "--lambda-l",
        type=float,
        default=0.8,
        help="weight while appearance is repaired (default 0.8)",
    )
    gen.add_argument(
        "--k", type=int, default=5, help="steps at --lambda-s before switching (default 5)"
    )
    gen.add_argument("--constant-weight", type=float, help="one weight at every step (baseline)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, help="output video, .mp4 or .gif")
    gen.add_argument("--gif", action="store_true", help="also write a .gif beside the .mp4")
    gen.add_argument("--steps", type=int, help="DDIM steps (default: the base model's, 50)")
    gen.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default 12.0)")
    gen.add_argument("--eta", type=float, help="DDIM eta (default: the base model's)")
    gen.add_argument("--num-frames", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--fps", type=int)
    gen.add_argument("--negative-prompt")
    gen.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    gen.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="default: float16 on cuda, else float32",
    )
    gen.add_argument("--vae-chunk-size", type=int, help=TRAIN_HELP["vae_chunk_size"])
    gen.add_argument(
        "--offload",
        choices=["model", "sequential"],
        help="keep weights in CPU memory for small GPUs: 'model' moves one component at a "
        "time to the GPU, 'sequential' one layer at a time (least memory, slowest)",
    )
    gen.add_argument(
        "--unmerged",
        action="store_true",
        help="run LoRA layers unmerged instead of folding them (slower)",
    )
    gen.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="load a subject module onto a base model with other weights",
    )
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    convert = sub.add_parser(
        "convert", help="convert an original checkpoint into fast-loading safetensors"
    )
    convert.add_argument("kind", choices=["videocrafter2"], help="the checkpoint's model")
    convert.add_argument("checkpoint", help="the original model.ckpt")
    convert.add_argument("out_dir", help="folder to write; use it later as --base OUT_DIR")
    convert.add_argument("--config", help="original YAML config (default: read off the tensors)")
    convert.add_argument(
        "--tokenizer",
        help="folder or hub id of the CLIP tokenizer to bundle "
        "(default: $CUSTOMCRAFTER_OPENCLIP_TOKENIZER or the ViT-H-14 one in the HF cache)",
    )
    convert.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        help="store the weights in this precision (default: as in the checkpoint)",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR")

    shapes = sub.add_parser("shapes", help="the shapes world and the small model trained on it")
    shapes_sub = shapes.add_subparsers(dest="shapes_command", required=True)
    tb = shapes_sub.add_parser(
        "train-base",
        help="train the shapes model from scratch (under 2 hours on 2 CPU cores)",
    )
    tb.add_argument("--out", required=True, help="run folder; the model lands in OUT/model")
    from .shapes.train_base import BaseRecipe

    for f in fields(BaseRecipe):
        flag, text = "--" + f.name.replace("_", "-"), f"(default: {f.default})"
        if isinstance(f.default, bool):
            tb.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=text
            )
        else:
            tb.add_argument(flag, type=type(f.default), default=f.default, help=text)
    ev = shapes_sub.add_parser(
        "evaluate-base",
        help="how often the model's clips show the prompt's color, background and motion",
    )
    ev.add_argument("--base", default="shapes", help="base model (default: shapes)")
    ev.add_argument("--seeds", type=int, default=3, help="clips per held-out caption")
    ev.add_argument("--out", help="also write the report as JSON here")
    ev.add_argument(
        "--split",
        choices=["held-out", "train"],
        default="held-out",
        help="held-out captions (the figure to report) or training captions (for tuning)",
    )
    ev.add_argument("--steps", type=int, help="DDIM steps (default: the model's)")
    ev.add_argument("--guidance-scale", type=float, help="default: the model's")

    from .evaluation.commands import add_benchmark_parser, add_eval_parser

    add_eval_parser(sub)
    add_benchmark_parser(sub)

    demo = sub.add_parser("demo", help="learn a subject and generate videos, offline, on the CPU")
    demo.add_argument("--output-dir", default="demo-output")
    demo.add_argument("--steps", type=int, default=300, help="subject-module training steps")
    demo.add_argument("--overwrite", action="store_true")
    return parser


def _train(args: argparse.Namespace) -> None:
    from .training import train

    values = {k: v for k, v in vars(args).items() if k not in ("command", "config", "quiet")}
    if "initializer_words" in values:
        pairs = {}
        for item in values["initializer_words"]:
            token, sep, word = item.partition("=")
            if not sep or not word:
                raise UserError(f"--initializer-word takes TOKEN=WORD, got {item!r}")
            pairs[token] = word
        values["initializer_words"] = pairs
    file_values = load_config_file(args.config) if args.config else {}
    config = merge_config(TrainConfig, file_values, values)
    for name in ("instance_data_dir", "instance_prompt", "output_dir"):
        if not getattr(config, name):
            raise UserError(f"--{name.replace('_', '-')} is required")
    path = train(config, progress=not args.quiet)
    print(f"subject module written to {path}")


def _device_and_dtype(args):
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = args.dtype or ("float16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, name)


def _generate(args: argparse.Namespace) -> None:
    from .io.video import check_output_path, write_video
    from .sampling import CustomCrafterPipeline, DynamicWeightSchedule

    out = check_output_path(args.out, args.overwrite)
    gif = out.with_suffix(".gif") if args.gif and out.suffix == ".mp4" else None
    if gif is not None:
        check_output_path(gif, args.overwrite)
    if args.no_subject and args.subject:
        raise UserError("--no-subject and --subject exclude each other")
    if not args.no_subject and not args.subject:
        raise UserError(
            "give --subject (a trained subject module) or --no-subject for the plain base model"
        )
    if args.no_subject and not args.base:
        raise UserError("--no-subject needs --base")
    device, dtype = _device_and_dtype(args)
    pipe = CustomCrafterPipeline.from_pretrained(
        args.base,
        None if args.no_subject else args.subject,
        device=device,
        dtype=dtype,
        strict=not args.allow_base_mismatch,
        base_config=args.base_config,
        vae_chunk_size=args.vae_chunk_size,
        offload=args.offload,
    )
    if args.no_subject:
        schedule = DynamicWeightSchedule.off()
    elif args.constant_weight is not None:
        schedule = DynamicWeightSchedule.constant(args.constant_weight)
    else:
        schedule = DynamicWeightSchedule(args.lambda_s, args.lambda_l, args.k)
    result = pipe(
        args.prompt,
        schedule=schedule,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        eta=args.eta,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        fps=args.fps,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        fold_lora=not args.unmerged,
        progress=not args.quiet,
    )
    fps = args.fps or pipe.model.defaults.fps
    write_video(out, result.videos[0], fps)
    print(f"{schedule.describe()}: wrote {out}")
    if gif is not None:
        write_video(gif, result.videos[0], fps)
        print(f"wrote {gif}")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from .models.videocrafter2 import convert_videocrafter2, load_openclip_tokenizer

    out = convert_videocrafter2(
        args.checkpoint,
        args.out_dir,
        config=args.config,
        tokenizer=load_openclip_tokenizer(args.tokenizer),
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}; use it with --base {out}")


def _shapes(args: argparse.Namespace) -> None:
    if args.shapes_command == "train-base":
        from .shapes.train_base import BaseRecipe, train_base

        recipe = BaseRecipe(**{f.name: getattr(args, f.name) for f in fields(BaseRecipe)})
        path = train_base(args.out, recipe, progress=not args.quiet)
        print(f"shapes model written to {path}; use it with --base {path}")
    elif args.shapes_command == "evaluate-base":
        from .io.files import write_json
        from .models import load_base_model
        from .shapes.evaluate import evaluate_base, format_report

        report = evaluate_base(
            load_base_model(args.base),
            seeds=range(args.seeds),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            split=args.split,
            progress=not args.quiet,
        )
        print(format_report(report))
        if args.out:
            write_json(Path(args.out), report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.command == "train":
            _train(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "convert":
            _convert(args)
        elif args.command == "shapes":
            _shapes(args)
        elif args.command == "eval":
            from .evaluation.commands import run_eval

            run_eval(args)
        elif args.command == "benchmark":
            from .evaluation.commands import run_benchmark_command

            run_benchmark_command(args)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(
                Path(args.output_dir),
                steps=args.steps,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
