"""The numbers customized video generation is judged by (CustomCrafter, AAAI 2025, Table 1).

* **CLIP-T**: mean over frames of the cosine between the frame's CLIP image embedding and the
  CLIP text embedding of the prompt, with the subject tokens dropped (``"a <new1> dog"`` ->
  ``"a dog"``: the class word stays, as the base CLIP model does not know ``<new1>``).
* **CLIP-I**: mean cosine between the CLIP embeddings of every frame and every reference image.
* **DINO-I**: the same with a self-supervised DINO ViT (CLS token of the last hidden state).
* **T.Cons**: mean CLIP cosine between consecutive frames.
* **Motion**: VBench's dynamic degree (see :func:`motion_metrics`) plus the mean optical-flow
  magnitude.

Where the definitions leave a detail open, the CustomCrafter authors' evaluation scripts
(``eval/eval_clip.py``, ``eval/eval_dino.py``, ``eval/eval_clip_id.py``, ``eval/eval_dd.py`` in
WuTao-CS/CustomCrafter at a7c93e7) decide it; the comments below say where.

Videos are uint8 arrays ``[f, h, w, 3]`` or lists of PIL images; reference images are PIL images
or uint8 ``[h, w, 3]`` arrays. Each score is for one video: the authors report the mean of the
per-video scores over all videos (and, for CLIP-I and DINO-I, over all reference images).
Images are preprocessed here, with PIL, as the authors' torchvision transforms do, whatever
backend the installed transformers would pick: an optional package never changes a number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import DEFAULT_CLIP, DEFAULT_DINO
from ..errors import UserError
from ..prompts import strip_tokens
from .frames import ImageLike, VideoLike, image_list, video_array
from .motion import VBENCH_BASE_THRESHOLD, motion_metrics, subsample

DINOV2_SMALL = "facebook/dinov2-small"  # accepted too: the CLS token is index 0 as well
BATCH_SIZE = 32


@dataclass(frozen=True)
class Metric:
    """How a report names and prints one metric."""

    key: str
    label: str
    description: str
    digits: int = 3


#: the metrics of this module and of :mod:`.motion`, in report order
METRICS: tuple[Metric, ...] = (
    Metric("clip_t", "CLIP-T", "CLIP cosine of frames and prompt (token dropped)"),
    Metric("clip_i", "CLIP-I", "CLIP cosine of frames and reference images"),
    Metric("dino_i", "DINO-I", "DINO cosine of frames and reference images"),
    Metric("t_cons", "T.Cons", "CLIP cosine of consecutive frames"),
    Metric("dynamic_degree", "Dynamic degree", "share of videos VBench's rule calls dynamic"),
    Metric("flow_magnitude", "Flow magnitude", "mean optical-flow magnitude, px per frame", 2),
)


# --- preprocessing ---------------------------------------------------------------------------
def _size(value: Any, key: str) -> int | None:
    """``value[key]`` of a processor's size setting (a dict, or transformers 5's SizeDict)."""
    if value is None:
        return None
    found = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    return None if found is None else int(found)


def _resample(value: Any) -> int:
    """A PIL resampling filter from a processor's ``resample`` (an int or an enum)."""
    if isinstance(value, int):
        return int(value)
    return int(Image.Resampling[str(getattr(value, "name", value)).upper()])


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's ``center_crop``: offsets ``round((side - crop) / 2)``, zero padding when
    the crop is larger. (transformers' processors floor the offsets instead: one pixel off
    whenever the margin is 3 mod 4.)"""
    w, h = image.size
    if height > h or width > w:
        canvas = Image.new(image.mode, (max(w, width), max(h, height)))
        canvas.paste(image, ((max(w, width) - w) // 2, (max(h, height) - h) // 2))
        image, (w, h) = canvas, canvas.size
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def preprocess(images: Sequence[Image.Image], processor) -> torch.Tensor:
    """``pixel_values`` ``[n, 3, H, W]`` float32 for ``images``, following ``processor``'s
    settings (resize to a shortest edge or to a fixed size, center crop, rescale, normalize)
    the way the authors' torchvision transforms apply them: CLIP's (``clip.load``'s
    preprocess) for ``CLIPImageProcessor`` settings, dino-vits16's for ``ViTImageProcessor``."""
    out = []
    for image in images:
        image = image.convert("RGB")
        if getattr(processor, "do_resize", False):
            resample = _resample(getattr(processor, "resample", Image.Resampling.BICUBIC))
            size = processor.size
            shortest = _size(size, "shortest_edge")
            w, h = image.size
            if shortest is not None:
                short, long = sorted((w, h))
                new_long = int(shortest * long / short)
                target = (shortest, new_long) if w <= h else (new_long, shortest)
            else:
                target = (_size(size, "width"), _size(size, "height"))
            image = image.resize(target, resample=resample)
        if getattr(processor, "do_center_crop", False):
            crop = processor.crop_size
            image = _center_crop(image, _size(crop, "height"), _size(crop, "width"))
        array = np.asarray(image, dtype=np.float32)
        if getattr(processor, "do_rescale", True):
            array = array * np.float32(getattr(processor, "rescale_factor", 1 / 255))
        if getattr(processor, "do_normalize", False):
            mean = np.asarray(processor.image_mean, dtype=np.float32)
            std = np.asarray(processor.image_std, dtype=np.float32)
            array = (array - mean) / std
        out.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
    return torch.stack(out)


# --- loading ---------------------------------------------------------------------------------
def _features(output: Any) -> torch.Tensor:
    """transformers 4 returns projected CLIP features as a tensor, 5 in ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _from_pretrained(kind: str, name_or_path: str | Path, load: Callable[..., Any]) -> Any:
    """Call ``load(name, local_files_only=...)``, turning every failure into a ``UserError``."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    looks_local = (
        path.exists() or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    )
    if looks_local and not path.is_dir():
        raise UserError(
            f"the {kind} model folder {name} does not exist: give a folder written by "
            "save_pretrained (model, preprocessor and tokenizer files) or a hub id"
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        return load(str(path) if looks_local else name, local_files_only=offline)
    except (OSError, ValueError) as exc:  # missing files, bad ids, no network, offline cache
        raise UserError(
            f"could not load the {kind} model {name!r}: {exc}\n"
            f"Download it once with network access (`hf download {name}`, which fills the "
            "Hugging Face cache), or pass a local folder holding the model with its "
            "preprocessor (and tokenizer) files."
        ) from exc


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


class ClipScorer:
    """CLIP-T, CLIP-I and T.Cons with a transformers ``CLIPModel``.

    The processor's settings decide the preprocessing (:func:`preprocess`). The authors use
    OpenAI's ``clip`` package, whose transform (shortest side to 224 bicubic, centre crop 224,
    CLIP mean/std) is what the ``openai/clip-vit-base-patch32`` settings describe.
    """

    def __init__(self, model, processor, tokenizer, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = DEFAULT_CLIP, device: str | torch.device = "cpu"
    ) -> ClipScorer:
        """Load a CLIP model, its image processor and tokenizer from a hub id or a folder
        (only the local cache is read when ``HF_HUB_OFFLINE`` is set)."""
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        def load(name: str, **kwargs):
            return (
                CLIPModel.from_pretrained(name, **kwargs),
                CLIPImageProcessor.from_pretrained(name, **kwargs),
                AutoTokenizer.from_pretrained(name, **kwargs),
            )

        model, processor, tokenizer = _from_pretrained("CLIP", name_or_path, load)
        return cls(model, processor, tokenizer, device)

    @torch.no_grad()
    def image_embeddings(self, images: VideoLike | Sequence[ImageLike]) -> torch.Tensor:
        """L2-normalised image embeddings ``[n, d]`` (float32, on the CPU)."""
        return _embed_images(
            self,
            images,
            lambda pixels: _features(self.model.get_image_features(pixel_values=pixels)),
        )

    @torch.no_grad()
    def text_embeddings(self, texts: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[n, d]``; texts longer than the model's context
        (77 tokens) are truncated."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        max_length = min(
            self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings
        )
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
        return F.normalize(_features(output).float(), dim=-1).cpu()

    def clip_t(self, video: VideoLike, prompt: str, identifier: str | None = None) -> float:
        """CLIP-T: mean over frames of cos(frame, prompt without its ``<...>`` tokens, and
        without the subject's ``identifier`` word when it has one)."""
        text = strip_tokens(prompt, [identifier] if identifier else ())
        if not text:
            raise UserError(f"the prompt {prompt!r} has no words besides its subject tokens")
        frames = self.image_embeddings(video_array(video))
        return float((frames @ self.text_embeddings(text).T).mean())

    def clip_i(self, video: VideoLike, references: Sequence[ImageLike]) -> float:
        """CLIP-I: mean cosine over every (frame, reference image) pair. The authors average
        over frames per reference, then over references: the same number, as every reference
        is compared with every frame."""
        frames = self.image_embeddings(video_array(video))
        return float((frames @ self.image_embeddings(references).T).mean())

    def temporal_consistency(self, video: VideoLike) -> float:
        """T.Cons: mean cosine between the embeddings of consecutive frames."""
        frames = video_array(video)
        if len(frames) < 2:
            raise UserError("temporal consistency needs a video of at least two frames")
        embeddings = self.image_embeddings(frames)
        return float((embeddings[:-1] * embeddings[1:]).sum(-1).mean())


class DinoScorer:
    """DINO-I with a self-supervised ViT: ``facebook/dino-vits16`` (the authors' choice) or a
    DINOv2 model such as ``facebook/dinov2-small``; both are scored by the CLS token (index 0
    of ``last_hidden_state``), L2-normalised as the authors do.

    The processor's settings decide the preprocessing (:func:`preprocess`); the authors use
    dino-vits16's own (``ViTFeatureExtractor``: resize to 224 x 224 without cropping,
    ImageNet mean/std).
    """

    def __init__(self, model, processor, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = DEFAULT_DINO, device: str | torch.device = "cpu"
    ) -> DinoScorer:
        """Load a DINO or DINOv2 model and its image processor (hub id or folder)."""
        from transformers import AutoImageProcessor, AutoModel

        def load(name: str, **kwargs):
            return (
                AutoModel.from_pretrained(name, **kwargs),
                AutoImageProcessor.from_pretrained(name, **kwargs),
            )

        model, processor = _from_pretrained("DINO", name_or_path, load)
        return cls(model, processor, device)

    @torch.no_grad()
    def image_embeddings(self, images: VideoLike | Sequence[ImageLike]) -> torch.Tensor:
        """L2-normalised CLS embeddings ``[n, d]`` (float32, on the CPU)."""
        return _embed_images(
            self, images, lambda pixels: self.model(pixel_values=pixels).last_hidden_state[:, 0]
        )

    def dino_i(self, video: VideoLike, references: Sequence[ImageLike]) -> float:
        """DINO-I: mean cosine over every (frame, reference image) pair."""
        frames = self.image_embeddings(video_array(video))
        return float((frames @ self.image_embeddings(references).T).mean())


# --- everything at once ----------------------------------------------------------------------
@dataclass
class VideoMetrics:
    """The scores of one video; ``None`` where not computed."""

    clip_t: float | None = None
    clip_i: float | None = None
    dino_i: float | None = None
    t_cons: float | None = None
    dynamic: bool | None = None
    flow_magnitude: float | None = None


def evaluate_video(
    video: VideoLike,
    prompt: str | None,
    references: Sequence[ImageLike] | None,
    clip: ClipScorer | None = None,
    dino: DinoScorer | None = None,
    motion: bool = True,
    fps: float | None = None,
    flow: str = "farneback",
    base_threshold: float = VBENCH_BASE_THRESHOLD,
    device: str | torch.device = "cpu",
    identifier: str | None = None,
) -> VideoMetrics:
    """Every metric the given scorers allow: CLIP-T needs ``clip`` and a prompt (read without
    the subject's tokens or ``identifier`` word), CLIP-I and
    DINO-I need reference images, T.Cons and motion need two frames or more (see
    :func:`motion_metrics` for ``fps``, ``flow``, ``base_threshold`` and ``device``)."""
    frames = video_array(video)
    result = VideoMetrics()
    if clip is not None:
        if prompt:
            result.clip_t = clip.clip_t(frames, prompt, identifier)
        if references:
            result.clip_i = clip.clip_i(frames, references)
        if len(frames) > 1:
            result.t_cons = clip.temporal_consistency(frames)
    if dino is not None and references:
        result.dino_i = dino.dino_i(frames, references)
    if motion and len(subsample(frames, fps)) > 1:
        moved = motion_metrics(
            frames, flow=flow, fps=fps, base_threshold=base_threshold, device=device
        )
        result.dynamic = moved.dynamic
        result.flow_magnitude = moved.mean_magnitude
    return result


def _embed_images(scorer, images, embed) -> torch.Tensor:
    """L2-normalised ``embed(pixel_values)`` of ``images`` in batches of ``BATCH_SIZE``
    (float32, on the CPU); ``scorer`` has ``processor``, ``model`` and ``device``."""
    pictures = image_list(images)
    if not pictures:
        raise UserError("no images to embed")
    chunks = []
    for start in range(0, len(pictures), BATCH_SIZE):
        pixels = preprocess(pictures[start : start + BATCH_SIZE], scorer.processor)
        pixels = pixels.to(scorer.device, _model_dtype(scorer.model))
        chunks.append(embed(pixels).float())
    # the authors divide each embedding by its norm before taking dot products
    return F.normalize(torch.cat(chunks), dim=-1).cpu()
