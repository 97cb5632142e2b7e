"""``customcrafter probe``: when a base model decides motion (``commitment``), and where a
subject module acts (``bands``). Under ``accelerate launch`` the runs are split across the
processes and the main process writes the results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DTYPES, SampleConfig, default_device, default_dtype, field_named
from ..errors import UserError
from ..sampling.dwvs import BandSchedule
from .args import add_config_arguments, bounded, config_values

#: the sampler settings a probe takes, as generate declares them
SAMPLER = ("num_inference_steps", "guidance_scale", "eta", "seed")


def _steps(text: str) -> list[int]:
    step = bounded(int, minimum=0)
    try:
        return [step(item) for item in text.split(",") if item.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"takes comma-separated step counts (0 or more), got {text!r}"
        ) from None


def _common(parser: argparse.ArgumentParser, samples: int) -> None:
    parser.add_argument("--output-dir", required=True, help="folder for the JSON and charts")
    parser.add_argument(
        "--samples",
        type=bounded(int, minimum=1, maximum=1000),
        default=samples,
        help=f"noises per prompt (default: {samples}; 1 to 1000)",
    )
    add_config_arguments(parser, SampleConfig, only=SAMPLER)
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="default: float16 on cuda, else float32")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe", help="measure when a base model decides motion, and where a module acts"
    )
    sub = parser.add_subparsers(dest="probe", required=True)

    c = sub.add_parser(
        "commitment",
        help="denoise with prompt A for the first j steps and B after: when is each "
        "attribute decided, and which k to sample with",
        description="For prompt pairs that differ in one attribute, denoise with A for the "
        "first j steps and B for the rest (same noise) and count how often the video "
        "follows A. Writes commitment.json, commitment.png/.svg and the suggested --k.",
    )
    c.add_argument("--base", required=True, help="base model (shapes, a folder, a hub id)")
    c.add_argument(
        "--pairs",
        help="YAML or JSON list of {attribute, first, then} prompt pairs (default: opposite "
        "motions and colors; the shapes world's own captions on --base shapes)",
    )
    c.add_argument("--grid", type=_steps, help="switch steps j to try, e.g. 0,2,5,10,25,50")
    c.add_argument(
        "--scorer",
        choices=["auto", "detectors", "flow"],
        default="auto",
        help="detectors: a lab model's (the shapes world's); flow: label-free optical flow and "
        "mean frame against the pure-A and pure-B runs (default: detectors on a lab model, "
        "else flow)",
    )
    _common(c, samples=8)
    c.set_defaults(run=run_commitment)

    b = sub.add_parser(
        "bands",
        help="the subject module in one band of steps only: where its harm and good come from",
    )
    b.add_argument("--subject", required=True, help="subject module folder or file")
    b.add_argument("--base", help="base model (default: the one the module was trained on)")
    b.add_argument(
        "--prompt",
        action="append",
        help="a prompt with the subject's token (repeat it; default on the shapes model: the "
        "four directions)",
    )
    b.add_argument(
        "--references", help="the subject's photos (default: the folder it was trained on)"
    )
    b.add_argument(
        "--dino",
        help="DINO model for the subject similarity off the shapes world (DINO-I against "
        "--references), e.g. facebook/dino-vits16",
    )
    b.add_argument(
        "--bands",
        type=bounded(int, minimum=1),
        default=5,
        help="bands of steps (default: 5; at most the sampling steps)",
    )
    weight = field_named(BandSchedule, "weight").metadata
    b.add_argument(
        "--weight",
        type=bounded(float, minimum=weight["minimum"], maximum=weight["maximum"]),
        default=1.0,
        help="module weight in the band (default: 1.0)",
    )
    _common(b, samples=4)
    b.set_defaults(run=run_bands)


def _pipeline(args, base: str | None, subject: str | None = None):
    from ..processes import device as process_device
    from ..sampling import CustomCrafterPipeline

    device = default_device(process_device(args.device))
    return CustomCrafterPipeline.from_pretrained(
        base, subject=subject, device=device, dtype=default_dtype(args.dtype, device)
    )


def _settings(args) -> dict:
    """The sampler settings given, checked as generate checks them (steps and seed apart)."""
    config = SampleConfig(**config_values(args, SampleConfig))
    config.validate()
    given = {"guidance_scale": config.guidance_scale, "eta": config.eta}
    return {name: value for name, value in given.items() if value is not None}


def _read_pairs(path: str):
    import yaml

    from ..probe import PromptPair

    try:
        items = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the prompt pairs {path}: {exc}") from None
    if not isinstance(items, list) or not items:
        raise UserError(f"{path} must be a list of {{attribute, first, then}} pairs")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"attribute", "first", "then"}:
            raise UserError(
                f"{path}: pair {i + 1} must have exactly the keys attribute, first and then"
            )
        if not all(isinstance(v, str) and v.strip() for v in item.values()):
            raise UserError(f"{path}: pair {i + 1} needs three non-empty strings")
        pairs.append(PromptPair(**item))
    return pairs


def run_commitment(args: argparse.Namespace) -> None:
    from ..io.files import check_writable, write_json
    from ..probe import commitment
    from ..probe.plot import plot_commitment
    from ..processes import state as processes

    settings = _settings(args)  # before anything loads
    out = check_writable(args.output_dir, "--output-dir")
    pairs = _read_pairs(args.pairs) if args.pairs else None
    pipe = _pipeline(args, args.base)
    result = commitment(
        pipe,
        pairs,
        switch_steps=args.grid,
        samples=args.samples,
        seed=args.seed,
        scorer=args.scorer,
        num_inference_steps=args.num_inference_steps,
        progress=not args.quiet,
        **settings,
    )
    if not processes().is_main_process:  # (its share is in the result)
        return
    data = result.as_dict()
    write_json(out / "commitment.json", data)
    charts = plot_commitment(data, out / "commitment")
    print(result.summary())
    print(f"written: {out / 'commitment.json'}, {', '.join(str(c) for c in charts)}")


def run_bands(args: argparse.Namespace) -> None:
    import numpy as np

    from ..io.files import check_writable, write_json, write_text
    from ..io.images import list_images, load_image
    from ..probe import bands
    from ..probe.plot import plot_bands
    from ..processes import state as processes

    settings = _settings(args)  # before anything loads
    out = check_writable(args.output_dir, "--output-dir")
    pipe = _pipeline(args, args.base, args.subject)
    meta = pipe.subject.metadata
    prompts = args.prompt
    if not prompts:
        lab = pipe.model.lab  # a lab model knows how its subjects move
        if lab is None:
            raise UserError("give --prompt (with the subject's token) at least once")
        token = meta.words[0]
        prompts = lab.moving_prompts(meta.initializer_words.get(token, "object"), token)
    folder = args.references or meta.training.get("instance_data_dir")
    references = None
    if folder and Path(folder).is_dir():
        size = (pipe.model.defaults.width, pipe.model.defaults.height)
        references = [
            np.asarray(load_image(p).resize(size)) for p in list_images(folder, "reference image")
        ]
    elif args.references:
        raise UserError(f"--references {args.references} is not a folder")
    similarity = None
    if args.dino:
        from ..evaluation.metrics import DinoScorer

        dino = DinoScorer.from_pretrained(args.dino, device=pipe.model.device)
        similarity = dino.dino_i
    result = bands(
        pipe,
        prompts,
        references,
        similarity=similarity,
        count=args.bands,
        weight=args.weight,
        samples=args.samples,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        progress=not args.quiet,
        **settings,
    )
    if not processes().is_main_process:
        return
    data = result.as_dict()
    write_json(out / "bands.json", data)
    write_text(out / "bands.md", result.table() + "\n")
    charts = plot_bands(data, out / "bands")
    print(result.table())
    print(f"written: {out / 'bands.json'}, {', '.join(str(c) for c in charts)}")
