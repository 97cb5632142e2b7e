"""A subject module as a LoRA file other tools load: ComfyUI's or diffusers'.

Each model family that exports says how those tools name its layers
(``BaseVideoModel.lora_naming``; today Wan's: ``models/wan_lora.py``). The LoRA scale
``alpha / rank`` is folded into ``lora_B`` and ``alpha`` written as the rank, so every
loader applies the module at exactly the weight it is given. A learnt token (the paper's
``<new1>``) is a new row of the text encoder's embedding table, which neither format
carries: such a subject is refused unless ``drop_token`` says to export the LoRA alone.

A subject of Wan 2.2 A14B that adapts both experts is written one file per expert
(``expert="high"`` for ``transformer``, ``"low"`` for ``transformer_2``), as ComfyUI loads a
LoRA into each expert's model and diffusers into ``transformer_2`` with
``load_lora_weights(..., load_into_transformer_2=True)``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from safetensors.torch import save_file

from ..errors import UserError
from ..io.files import atomic_path, check_output_file
from ..models.base import lora_entries
from ..models.registry import lora_namings
from .module import read_subject, resolve_subject_path

FORMATS = tuple(dict.fromkeys(f for naming in lora_namings() for f in naming.formats))


def export_subject(
    subject: str | Path,
    out: str | Path,
    format: str = "comfyui",
    drop_token: bool = False,
    overwrite: bool = False,
    expert: str | None = None,
) -> Path:
    """Write ``subject`` (a Wan subject module file or training folder) as a LoRA file in
    ``format``, atomically; returns the path written."""
    if format not in FORMATS:
        raise UserError(f"--format is one of {', '.join(FORMATS)}, got {format!r}")
    path = resolve_subject_path(subject)
    out = check_output_file(out, overwrite, (".safetensors",), reads=(path,), what="exported file")
    metadata, tensors = read_subject(path)
    namings = lora_namings()
    prefixes = sorted({p for n in namings for p in n.experts.values() if p}, key=len)
    targets, prefix = _expert_targets(path, metadata.targets, expert, prefixes)
    naming = next((n for n in namings if all(n.owns(t) for t in targets)), None)
    if naming is None:
        names = [n.family for n in namings]
        families = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        foreign = next((t for t in targets if not any(n.owns(t) for n in namings)), targets[0])
        raise UserError(
            f"{path} was trained on {metadata.base_model!r}, not a {families} model (its layer "
            f"{foreign} has a name in none of them): only their subject modules export"
        )
    if format not in naming.formats:
        raise UserError(
            f"{path} is a {naming.family} subject module, which exports as "
            f"{' or '.join(naming.formats)} only, not {format}"
        )
    if metadata.tokens and not drop_token:
        raise UserError(
            f"{path} carries the learnt token(s) {', '.join(metadata.tokens)}, a new row of "
            f"the text encoder's embedding table that {format} LoRA files cannot hold. Pass "
            "--drop-token to export the LoRA alone (prompts in the other tool then name the "
            "subject by its class word, e.g. "
            f"{next(iter(metadata.initializer_words.values()))!r}, with less likeness), or "
            "train the subject again with --identifier WORD (an existing rare word such as "
            "sks, written before the class word in the prompts) so that the LoRA alone "
            "carries it"
        )
    lora = _scaled(tensors, targets, prefix, metadata.rank, metadata.lora_alpha)
    # a family whose tool fuses layers converts them all at once (HunyuanVideo 1.5)
    convert = getattr(naming, "convert", partial(lora_entries, naming))
    converted = convert(lora, metadata.rank, format)
    info = {
        "format": format,
        "source": "customcrafter",
        "base_model": metadata.base_model,
        "rank": str(metadata.rank),
        "expert": expert or "",
        "dropped_tokens": json.dumps(metadata.tokens if drop_token else []),
        "identifier": metadata.identifier or "",
    }
    with atomic_path(out) as tmp:
        save_file(converted, str(tmp), metadata=info)
    return out


def _expert_targets(
    path, targets: list[str], expert: str | None, prefixes: list[str]
) -> tuple[list[str], str]:
    """The targets (named within their expert) that one file holds, and their prefix:
    ``prefixes`` are the second experts' (Wan 2.2 A14B's ``transformer_2.``)."""
    low_prefix = next((p for p in prefixes if any(t.startswith(p) for t in targets)), "")
    low = [t[len(low_prefix) :] for t in targets if low_prefix and t.startswith(low_prefix)]
    high = [t for t in targets if not (low_prefix and t.startswith(low_prefix))]
    if expert is None:
        if low and high:
            raise UserError(
                f"{path} adapts both experts of Wan 2.2 A14B; export one file per expert with "
                "--expert high and --expert low (ComfyUI loads one LoRA into each expert's "
                "model; diffusers loads the low one with load_lora_weights(..., "
                "load_into_transformer_2=True))"
            )
        if not high:  # plain names would load into the high-noise expert
            raise UserError(
                f"{path} adapts only the low-noise expert (transformer_2) of Wan 2.2 A14B; "
                "export it with --expert low and load it into that expert (ComfyUI: the "
                "low-noise model; diffusers: load_lora_weights(..., "
                "load_into_transformer_2=True))"
            )
        return high, ""
    if expert not in ("high", "low"):
        raise UserError(f"--expert is high or low, got {expert!r}")
    chosen = high if expert == "high" else low
    if not chosen:
        raise UserError(f"{path} has no layers in the {expert}-noise expert; leave out --expert")
    return chosen, ("" if expert == "high" else low_prefix)


def _scaled(tensors, targets, prefix: str, rank: int, alpha: float) -> dict:
    """``{target: (A, B * alpha / rank)}`` in float32, ``targets`` named within the expert
    whose layers in the subject file carry ``prefix``."""
    scale = float(alpha) / float(rank)
    out = {}
    for target in targets:
        a = tensors[f"{prefix}{target}.lora_A.weight"].float().contiguous()
        b = (tensors[f"{prefix}{target}.lora_B.weight"].float() * scale).contiguous()
        out[target] = (a, b)
    return out
