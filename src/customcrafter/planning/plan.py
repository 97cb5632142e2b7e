"""A memory plan before anything loads: what each way to run a job needs, and the fastest way
that fits.

A *way* is a choice of the memory levers: the denoiser's weights in bf16 or float8
(``--weights-dtype``), the text encoder's too (``--text-encoder-dtype``), N blocks offloaded
(``--offload-blocks``), gradient checkpointing (training), and for generation whether the
LoRA keeps folded copies of its layers (the default) or not (``--unmerged``) and whether
each component visits the GPU only while it runs (``--offload model``).

The job runs in phases, as the code runs them. Training: ``encode`` (the clips and captions
encoded once, the text encoder and VAE on the GPU), then ``step`` (the denoisers moved in,
the text encoder and VAE moved off unless the step needs them); a model without an input
cache has every component on the GPU for its steps. The class images of the prior loss are
assumed to exist (``--class-data-dir``): generating them is a ``generate`` job. Generation: ``text``, ``denoise``, ``decode``. A phase needs the
weights it keeps on the GPU (counted from the model's parameters and the way's dtypes) plus
the peak of what it creates (traced once per dtype and checkpointing choice on the meta
device, ``trace.py``). Offloading N blocks takes their frozen weights away and adds room for
the two blocks on the GPU at a time; this is arithmetic on the traced figures, checked
against a traced run with blocks offloaded (tests/test_plan.py).

The time of each way is an *estimate* relative to the fastest way (1.0): the traced FLOPs of
the step (checkpointing's recomputation included) at ``GPU_FLOPS``, plus the float8 casts at
``GPU_BANDWIDTH``, plus the part of each offloaded block's copy (``PCIE``) that its
predecessor's compute does not hide, plus whole components moved by ``--offload model``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..models.base import text_encoder_skips
from . import trace
from .releases import build_on_meta, parameter_counts

GB = 1e9
#: what the estimates assume (a 24 GB-class card): bf16 matrix FLOP/s sustained, memory
#: bandwidth in bytes/s, host-to-device copies from pinned memory in bytes/s
GPU_FLOPS = 80e12
GPU_BANDWIDTH = 0.9e12
PCIE = 20e9
#: the share of the card the estimate may use: the rest covers the CUDA allocator's rounding
#: and fragmentation and the CUDA context (to be settled by ``benchmarks/memory_check.py``)
MARGIN = 0.9
COMPUTE_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Job:
    """What is to run: ``task`` ``train`` or ``generate`` on ``base`` at this size."""

    base: str
    task: str
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    #: training: the subject named by an existing word (the text encoder leaves the GPU)
    identifier: bool = False
    train_batch_size: int = 1
    num_inference_steps: int = 50


@dataclass(frozen=True)
class Way:
    weights_dtype: str | None = None
    text_encoder_dtype: str | None = None
    offload_blocks: int = 0
    gradient_checkpointing: bool = False
    unmerged: bool = False
    cpu_offload: bool = False

    @property
    def folds(self) -> bool:
        """Whether generation keeps a folded copy of the LoRA's layers (the pipeline's
        default; with float8 weights or either offload each layer is folded as it runs,
        into a temporary the size of one layer's weight, not counted)."""
        return not (self.unmerged or self.weights_dtype or self.offload_blocks or self.cpu_offload)

    def flags(self, task: str) -> list[str]:
        """The command-line flags of this way for ``customcrafter <task>``."""
        out = ["--mixed-precision", "bf16"] if task == "train" else ["--dtype", "bfloat16"]
        if self.weights_dtype:
            out += ["--weights-dtype", self.weights_dtype]
        if self.text_encoder_dtype:
            out += ["--text-encoder-dtype", self.text_encoder_dtype]
        if self.gradient_checkpointing:
            out.append("--gradient-checkpointing")
        if self.offload_blocks:
            out += ["--offload-blocks", str(self.offload_blocks)]
        if self.unmerged:
            out.append("--unmerged")
        if self.cpu_offload:
            out += ["--offload", "model"]
        return out


@dataclass
class Estimate:
    way: Way
    #: peak bytes of each phase
    phases: dict[str, int]
    #: estimated time relative to the fastest way tried
    slowdown: float = 1.0
    seconds: float = 0.0

    @property
    def peak(self) -> int:
        return max(self.phases.values())


@dataclass
class Plan:
    job: Job
    size: tuple[int, int, int]
    parameters: dict[str, int]
    estimates: list[Estimate]
    vram: float | None
    chosen: Estimate | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.chosen is not None

    def fastest_within(self, vram: float) -> Estimate | None:
        """The way to choose for a card of ``vram`` GB (``None``: nothing fits)."""
        fitting = [e for e in self.estimates if e.peak <= vram * GB * MARGIN]
        return min(fitting, key=_preference) if fitting else None

    @property
    def smallest(self) -> Estimate:
        return min(self.estimates, key=lambda e: e.peak)

    def as_json(self) -> dict:
        chosen = self.chosen or self.smallest
        return {
            "base": self.job.base,
            "task": self.job.task,
            "size": {"height": self.size[0], "width": self.size[1], "num_frames": self.size[2]},
            "vram_gb": self.vram,
            "usable_gb": None if self.vram is None else round(self.vram * MARGIN, 2),
            "fits": self.fits,
            "peak_gb": round(chosen.peak / GB, 2),
            "phases_gb": {k: round(v / GB, 2) for k, v in chosen.phases.items()},
            "settings": chosen.way.flags(self.job.task),
            "slowdown": round(chosen.slowdown, 2),
            "parameters": self.parameters,
            "ways": [
                {
                    "settings": e.way.flags(self.job.task),
                    "peak_gb": round(e.peak / GB, 2),
                    "slowdown": round(e.slowdown, 2),
                }
                for e in sorted(self.estimates, key=_preference)
            ],
            "assumptions": {
                "gpu_flops": GPU_FLOPS,
                "gpu_bandwidth": GPU_BANDWIDTH,
                "pcie": PCIE,
                "margin": MARGIN,
            },
            "notes": self.notes,
        }


def _preference(e: Estimate) -> tuple:
    """Faster first (times within 1% are a tie); then fewer blocks offloaded (less pinned
    CPU memory), fewer weights in float8 (closer to the model's numbers), less memory."""
    levers = (e.way.weights_dtype is not None) + (e.way.text_encoder_dtype is not None)
    levers += e.way.unmerged
    return (round(e.slowdown, 2), e.way.offload_blocks, levers, e.way.cpu_offload, e.peak)


# --- the model as a way leaves it -------------------------------------------------------------
def _bytes(module: torch.nn.Module, trained: bool | None = None) -> int:
    total = 0
    for p in module.parameters():
        if trained is None or p.requires_grad == trained:
            total += p.numel() * p.element_size()
    return total + sum(b.numel() * b.element_size() for b in module.buffers())


def prepared(
    job: Job,
    weights_dtype: str | None,
    text_dtype: str | None,
    checkpointing: bool,
    device: str = "meta",
    model=None,
):
    """The base as the way runs it: cast to bf16 or stored in float8, the subject module
    injected (its LoRA in float32 when training), checkpointing on. On the meta device, or
    (``device="cpu"``, small models: the check of the estimate) with real weights, loaded
    or the ``model`` given."""
    from ..models.registry import load_base_model
    from ..subject import SpatialSubjectModule

    if model is not None:
        model.to(device=device)
    elif device == "meta":
        model = build_on_meta(job.base)
        model._weights_fingerprint = "meta"  # nothing to hash on the meta device
    else:
        model = load_base_model(job.base).to(device=device)
    model.to(dtype=COMPUTE_DTYPE)
    if weights_dtype or text_dtype:
        model.store(weights_dtype, text_dtype, COMPUTE_DTYPE, training=job.task == "train")
    words = {} if job.identifier or job.task == "generate" else {"<new1>": "dog"}
    subject = SpatialSubjectModule.create(model, words, identifier="sks" if not words else None)
    if job.task == "train":
        for p in subject.parameters():
            p.data = p.data.float()
            p.requires_grad_(True)
        if checkpointing:
            model.enable_gradient_checkpointing()
    return model, subject


def _size(job: Job, model) -> tuple[int, int, int]:
    d = model.defaults
    frames = job.num_frames or (model.train_frames if job.task == "train" else d.num_frames)
    return job.height or d.height, job.width or d.width, frames


def _offloaded_bytes(model, count: int) -> tuple[int, int]:
    """Bytes of the frozen weights of the last ``count`` blocks of each denoiser, and of the
    two largest of them (on the GPU at a time)."""
    sizes = []
    for group in model.offloadable_blocks():
        sizes += [_bytes(b, trained=False) for b in group[len(group) - count :]] if count else []
    return sum(sizes), sum(sorted(sizes)[-2:])


def _targets_bytes(subject) -> int:
    """Bytes of the layers a folded LoRA keeps a folded copy of."""
    return sum(
        layer.base_layer.weight.numel() * COMPUTE_DTYPE.itemsize
        for layer in subject.layers.values()
    )


# --- estimating ----------------------------------------------------------------------------------
def estimate(job: Job, vram: float | None = None, counts: list[int] | None = None) -> Plan:
    """Every way to run ``job`` and its estimate; ``chosen``: the fastest that fits in
    ``vram`` GB (``None``: none chosen, every way listed)."""
    if job.task not in ("train", "generate"):
        raise UserError(f"--task must be train or generate, got {job.task!r}")
    dtypes = (None, "float8")
    base_model, _ = prepared(job, None, None, False)
    if not base_model.meta_traceable:
        raise UserError(
            f"the memory plan cannot trace {job.base!r} on the meta device yet: choose "
            "--weights-dtype, --offload-blocks and --gradient-checkpointing yourself"
        )
    size = _size(job, base_model)
    base_model.latent_shape(1, size[2], size[0], size[1])  # the model's own size checks
    parameters = parameter_counts(base_model)
    most = min((len(g) for g in base_model.offloadable_blocks()), default=0)
    counts = counts if counts is not None else list(range(0, most + 1))
    estimates = []
    if job.task == "train":
        for w in dtypes:
            for checkpointing in (False, True):
                traced = _train_traces(job, size, w, checkpointing)
                for t in dtypes:
                    for n in counts if checkpointing else [0]:
                        way = Way(w, t, n, checkpointing)
                        estimates.append(_train_estimate(job, way, traced))
    else:
        for w in dtypes:
            traced = _generate_traces(job, size, w)
            for t in dtypes:
                for n in counts:
                    for cpu in (False, True) if not n else (False,):
                        # --unmerged only where the LoRA would keep folded copies: with
                        # float8 weights or either offload it keeps none
                        folding = not (w or n or cpu)
                        for unmerged in (False, True) if folding else (False,):
                            way = Way(w, t, n, unmerged=unmerged, cpu_offload=cpu)
                            estimates.append(_generate_estimate(job, way, traced))
    fastest = min(e.seconds for e in estimates)
    for e in estimates:
        e.slowdown = e.seconds / fastest
    plan = Plan(job, size, parameters, estimates, vram)
    if vram is not None:
        plan.chosen = plan.fastest_within(vram)
    return plan


@dataclass
class _Traced:
    model: object
    subject: object
    weights: dict[str, int]
    phases: dict[str, trace.Traced]


def _component_bytes(model, subject) -> dict[str, int]:
    experts = list(model.experts().values())
    lora = sum(p.numel() * p.element_size() for p in subject.parameters())
    return {
        "denoiser": sum(_bytes(e) for e in experts) - lora,
        "text_encoder": _bytes(model.text_encoder),
        "vae": _bytes(model.vae),
        "lora": lora,
    }


@functools.lru_cache(maxsize=16)
def _train_traces(job: Job, size, weights_dtype, checkpointing) -> _Traced:
    from ..training.loop import SubjectDenoiser

    h, w, f = size
    model, subject = prepared(job, weights_dtype, None, checkpointing)
    cached = model.cache_training_inputs
    text_in_step = subject.trains_text_encoder or not cached
    denoiser = SubjectDenoiser(model, with_text=text_in_step)
    optimizer = trace.start_optimizer(subject.parameters())
    phases = {
        "step": trace.training_step(
            model, denoiser, optimizer, f, h, w, job.train_batch_size, cached, text_in_step, "meta"
        ),
        "text": trace.text_encoding(model, 2 * job.train_batch_size, "meta"),
        "video": trace.video_encoding(model, f, h, w, "meta"),
    }
    return _Traced(model, subject, _component_bytes(model, subject), phases)


@functools.lru_cache(maxsize=16)
def _generate_traces(job: Job, size, weights_dtype) -> _Traced:
    h, w, f = size
    model, subject = prepared(job, weights_dtype, None, False)
    phases = {
        "denoise": trace.denoising_step(model, f, h, w, "meta"),
        "text": trace.text_encoding(model, 2, "meta"),
        "decode": trace.video_decoding(model, f, h, w, "meta"),
    }
    return _Traced(model, subject, _component_bytes(model, subject), phases)


def _text_bytes(traced: _Traced, dtype: str | None) -> int:
    """The text encoder's weights in ``dtype`` (float8: its linear layers at one byte)."""
    full = traced.weights["text_encoder"]
    if dtype is None:
        return full
    encoder = traced.model.text_encoder
    skips = [re.compile(p) for p in text_encoder_skips(encoder)]
    linear = sum(
        m.weight.numel()
        for name, m in encoder.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(p.search(name) for p in skips)
    )
    return full - linear * (COMPUTE_DTYPE.itemsize - 1)


def _offload_cost(traced: _Traced, way: Way, flops: int, passes: int) -> float:
    """Seconds per step the copies of offloaded blocks are not hidden by compute."""
    if not way.offload_blocks:
        return 0.0
    model = traced.model
    gone, _ = _offloaded_bytes(model, way.offload_blocks)
    groups = model.offloadable_blocks()
    per_block_copy = gone / (way.offload_blocks * len(groups)) / PCIE
    # a two-expert model runs one expert per step: the step's compute is spread over that
    # expert's blocks, and its offloaded blocks are the ones copied
    per_block_compute = flops / max(max(len(g) for g in groups), 1) / passes / GPU_FLOPS
    exposed = max(0.0, per_block_copy - per_block_compute)
    return passes * way.offload_blocks * exposed


def _cast_cost(traced: _Traced, way: Way, passes: int) -> float:
    if not way.weights_dtype:
        return 0.0
    return passes * 3 * traced.weights["denoiser"] / GPU_BANDWIDTH / len(traced.model.experts())


def _text_cast_cost(traced: _Traced, way: Way) -> float:
    """The text encoder's float8 casts (one encoding)."""
    if not way.text_encoder_dtype:
        return 0.0
    return 3 * traced.weights["text_encoder"] / 2 / GPU_BANDWIDTH


def _train_estimate(job: Job, way: Way, traced: _Traced) -> Estimate:
    model, weights = traced.model, traced.weights
    gone, onloaded = _offloaded_bytes(model, way.offload_blocks)
    denoiser = weights["denoiser"] - gone + onloaded
    trained = weights["lora"] * 3  # the LoRA in float32 and AdamW's two moments
    text = _text_bytes(traced, way.text_encoder_dtype)
    cached = model.cache_training_inputs
    text_in_step = traced.subject.trains_text_encoder or not cached
    phases = {}
    if cached:
        encode = max(traced.phases["text"].peak, traced.phases["video"].peak)
        phases["encode"] = text + weights["vae"] + encode  # the denoisers join after
    step = denoiser + trained + traced.phases["step"].peak
    step += (text if text_in_step else 0) + (0 if cached else weights["vae"])
    phases["step"] = step
    flops = traced.phases["step"].flops
    passes = 2 if way.gradient_checkpointing else 1  # forward, and its recomputation
    seconds = flops / GPU_FLOPS + _offload_cost(traced, way, flops, passes)
    seconds += _cast_cost(traced, way, 1 + passes)
    if text_in_step:
        seconds += _text_cast_cost(traced, way) * 2  # forward and backward
    return Estimate(way, phases, seconds=seconds)


def _generate_estimate(job: Job, way: Way, traced: _Traced) -> Estimate:
    model, weights = traced.model, traced.weights
    gone, onloaded = _offloaded_bytes(model, way.offload_blocks)
    denoiser = weights["denoiser"] - gone
    if way.folds:
        denoiser += _targets_bytes(traced.subject)  # the folded copies
    text = _text_bytes(traced, way.text_encoder_dtype)
    vae = weights["vae"]
    p = traced.phases
    if way.cpu_offload:  # one component on the GPU at a time (Wan's text encoder streamed)
        text_resident = _largest_block(model.text_encoder) if _streams_text(model) else text
        phases = {
            "text": text_resident + p["text"].peak,
            "denoise": denoiser + p["denoise"].peak,
            "decode": vae + p["decode"].peak,
        }
    else:
        resident = denoiser + text + vae
        phases = {
            "text": resident + p["text"].peak,
            "denoise": resident + onloaded + p["denoise"].peak,
            "decode": resident + p["decode"].peak,
        }
    steps = job.num_inference_steps
    flops = p["denoise"].flops
    passes = 1 if model.batch_guidance else 2
    seconds = steps * (flops / GPU_FLOPS + _offload_cost(traced, way, flops, passes))
    seconds += steps * _cast_cost(traced, way, passes)
    seconds += (p["text"].flops + p["decode"].flops) / GPU_FLOPS + _text_cast_cost(traced, way)
    if way.cpu_offload:
        seconds += (weights["denoiser"] + text + vae) / PCIE
    return Estimate(way, phases, seconds=seconds)


def _streams_text(model) -> bool:
    return any(m is model.text_encoder for m in model.streamed_in_model_offload())


def _largest_block(module: torch.nn.Module) -> int:
    """Bytes of the largest child with parameters, recursively down to one layer's worth
    (what streaming a module layer by layer keeps on the GPU at a time)."""
    largest = max((_bytes(m) for m in module.modules() if not list(m.children())), default=0)
    return 2 * largest


# --- using a plan ----------------------------------------------------------------------------
def visible_vram() -> float:
    """The free memory of the visible GPU in GB; a ``UserError`` when none is visible."""
    if not torch.cuda.is_available():
        raise UserError(
            "no GPU is visible here: give --vram GB, the memory of the card to plan for"
        )
    free, _ = torch.cuda.mem_get_info()
    return free / GB


def parse_vram(text: str | float | None) -> float | None:
    """``--vram``: ``auto`` (the visible GPU's free memory) or a number of GB."""
    if text is None:
        return None
    if str(text).strip().lower() == "auto":
        return visible_vram()
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--vram takes auto or a number of GB, got {text!r}") from None
    if not 0 < value <= 10_000:
        raise UserError(f"--vram must be a number of GB above 0, got {text!r}")
    return value


def nothing_fits(plan: Plan) -> str:
    smallest = plan.smallest
    return (
        f"no way to run this fits in {plan.vram:g} GB: the smallest needs "
        f"{smallest.peak / GB / MARGIN:.1f} GB ({' '.join(smallest.way.flags(plan.job.task))}); "
        "lower --height/--width/--num-frames, or use a larger GPU"
    )


def choose(job: Job, vram: float) -> Plan:
    """The plan for ``job`` with a way chosen for ``vram`` GB; a ``UserError`` (exit 2) that
    names the smallest memory any way needs when nothing fits."""
    plan = estimate(job, vram)
    if not plan.fits:
        raise UserError(nothing_fits(plan))
    return plan


def describe(plan: Plan) -> str:
    """One line: what the plan chose and what it expects."""
    chosen = plan.chosen
    flags = " ".join(chosen.way.flags(plan.job.task))
    return (
        f"memory plan for {plan.vram:g} GB: {flags} (estimated peak {chosen.peak / GB:.1f} GB, "
        f"about {chosen.slowdown:.2f}x the time of the fastest way)"
    )


def train_job(config) -> Job:
    """The plan's job for a ``TrainConfig``."""
    return Job(
        config.base,
        "train",
        config.height,
        config.width,
        config.train_frames,
        identifier=config.identifier is not None,
        train_batch_size=config.train_batch_size,
    )


def fit_training(config, vram: float):
    """``config`` with the memory levers the plan chose for ``vram`` GB (they replace the
    config's own), and the line that says what was chosen."""
    import dataclasses

    plan = choose(train_job(config), vram)
    way = plan.chosen.way
    fitted = dataclasses.replace(
        config,
        mixed_precision="bf16",
        weights_dtype=way.weights_dtype,
        text_encoder_dtype=way.text_encoder_dtype,
        gradient_checkpointing=way.gradient_checkpointing,
        offload_blocks=way.offload_blocks,
    )
    return fitted, describe(plan)
