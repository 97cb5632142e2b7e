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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from ..subject.tokens import strip_tokens

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # the authors' CLIP: OpenAI ViT-B/32
DEFAULT_DINO = "facebook/dino-vits16"  # the authors' DINO model
DINOV2_SMALL = "facebook/dinov2-small"  # accepted too: the CLS token is index 0 as well
BATCH_SIZE = 32

# VBench's dynamic degree threshold is ``6.0 * min(h, w) / 256``; the CustomCrafter authors'
# own copy of the script (eval/eval_dd.py) uses 4.0 instead. Pass it as ``base_threshold``.
VBENCH_BASE_THRESHOLD = 6.0
CUSTOMCRAFTER_BASE_THRESHOLD = 4.0
TOP_FRACTION = 0.05  # the share of largest flow magnitudes a frame pair is scored by

ImageLike = Image.Image | np.ndarray
VideoLike = np.ndarray | Sequence[Image.Image]


# --- inputs ----------------------------------------------------------------------------------
def _to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise UserError(
            f"expected a PIL image or a uint8 [h, w, 3] array, got {array.dtype} {array.shape}"
        )
    return Image.fromarray(array).convert("RGB")


def _image_list(images: VideoLike | ImageLike | Sequence[ImageLike]) -> list[Image.Image]:
    """A video array ``[f, h, w, 3]``, one image, or a sequence of images -> PIL images."""
    if isinstance(images, Image.Image):
        return [_to_pil(images)]
    if isinstance(images, np.ndarray):
        return [_to_pil(frame) for frame in (images if images.ndim == 4 else [images])]
    return [_to_pil(image) for image in images]


def _video_array(video: VideoLike) -> np.ndarray:
    """The video as a uint8 array ``[f, h, w, 3]``."""
    if isinstance(video, np.ndarray):
        frames = video
    else:
        pictures = [np.asarray(_to_pil(frame)) for frame in video]
        if len({p.shape for p in pictures}) > 1:
            raise UserError("the video's frames differ in size")
        frames = np.stack(pictures) if pictures else np.zeros((0, 0, 0, 3), np.uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"expected a uint8 video [f, h, w, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise UserError("the video has no frames")
    return frames


def _features(output: Any) -> torch.Tensor:
    """transformers 4 returns projected CLIP features as a tensor, 5 in ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# --- loading ---------------------------------------------------------------------------------
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


# --- CLIP ------------------------------------------------------------------------------------
class ClipScorer:
    """CLIP-T, CLIP-I and T.Cons with a transformers ``CLIPModel``.

    The processor decides the preprocessing. The authors use OpenAI's ``clip`` package, whose
    transform (shortest side to 224 bicubic, centre crop 224, CLIP mean/std) is what the
    ``openai/clip-vit-base-patch32`` image processor does too.
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

    def clip_t(self, video: VideoLike, prompt: str) -> float:
        """CLIP-T: mean over frames of cos(frame, prompt without its ``<...>`` tokens)."""
        text = strip_tokens(prompt)
        if not text:
            raise UserError(f"the prompt {prompt!r} has no words besides its subject tokens")
        frames = self.image_embeddings(_video_array(video))
        return float((frames @ self.text_embeddings(text).T).mean())

    def clip_i(self, video: VideoLike, references: Sequence[ImageLike]) -> float:
        """CLIP-I: mean cosine over every (frame, reference image) pair. The authors average
        over frames per reference, then over references: the same number, as every reference
        is compared with every frame."""
        frames = self.image_embeddings(_video_array(video))
        return float((frames @ self.image_embeddings(references).T).mean())

    def temporal_consistency(self, video: VideoLike) -> float:
        """T.Cons: mean cosine between the embeddings of consecutive frames."""
        frames = _video_array(video)
        if len(frames) < 2:
            raise UserError("temporal consistency needs a video of at least two frames")
        embeddings = self.image_embeddings(frames)
        return float((embeddings[:-1] * embeddings[1:]).sum(-1).mean())


# --- DINO ------------------------------------------------------------------------------------
class DinoScorer:
    """DINO-I with a self-supervised ViT: ``facebook/dino-vits16`` (the authors' choice) or a
    DINOv2 model such as ``facebook/dinov2-small``; both are scored by the CLS token (index 0
    of ``last_hidden_state``), L2-normalised as the authors do.

    The processor decides the preprocessing; the authors use dino-vits16's own
    (``ViTFeatureExtractor``: resize to 224 x 224 without cropping, ImageNet mean/std).
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
        frames = self.image_embeddings(_video_array(video))
        return float((frames @ self.image_embeddings(references).T).mean())


# --- motion ----------------------------------------------------------------------------------
@dataclass
class MotionResult:
    """Motion of one video. ``pair_scores`` holds, per consecutive frame pair, the mean of the
    largest 5% of flow magnitudes; ``mean_magnitude`` is the mean flow magnitude over all
    pixels and pairs (pixels per frame step, after any fps subsampling)."""

    dynamic: bool
    mean_magnitude: float
    pair_scores: list[float] = field(default_factory=list)
    threshold: float = 0.0
    required_pairs: int = 0


def _top_fraction_mean(magnitude: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest ``int(pixels * fraction)`` values (at least one, so that frames under
    20 pixels still get a score where VBench would average an empty list)."""
    values = magnitude.ravel()
    count = max(1, int(values.size * fraction))
    return float(np.partition(values, values.size - count)[values.size - count :].mean())


def _farneback_flows(frames: np.ndarray) -> Iterator[np.ndarray]:
    """Dense flow ``[h, w, 2]`` from each frame to the next with OpenCV's Farneback method
    (OpenCV's usual settings: pyramid scale 0.5, 3 levels, 15 px window, 3 iterations)."""
    import cv2

    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    for first, second in zip(gray[:-1], gray[1:], strict=True):
        yield cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _load_raft(device: torch.device) -> torch.nn.Module:
    try:
        from torchvision.models.optical_flow import Raft_Large_Weights, raft_large
    except ImportError as exc:
        raise UserError(
            "flow='raft' needs torchvision, which is not installed: install the torchvision "
            "build that matches your torch, or use flow='farneback'"
        ) from exc
    # C_T_V1 are the RAFT authors' FlyingChairs + FlyingThings3D weights, the raft-things.pth
    # that VBench and the CustomCrafter authors load.
    weights = Raft_Large_Weights.C_T_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise UserError(
            f"the RAFT weights {cached.name} are not in the torch hub cache ({cached.parent}). "
            'Fetch them once with network access: python -c "from torchvision.models.'
            "optical_flow import raft_large; raft_large(weights='C_T_V1')\"; "
            "or use flow='farneback'"
        )
    return raft_large(weights=weights, progress=False).to(device).eval()


@torch.no_grad()
def _raft_flows(frames: np.ndarray, device: torch.device) -> Iterator[np.ndarray]:
    """Flow with torchvision's RAFT-large, run as VBench runs the original: inputs scaled to
    [-1, 1], padded (replicated edges, split evenly) to a multiple of 8, 20 refinement steps.
    The flow of the padded frame is returned, as VBench scores it."""
    model = _load_raft(device)
    height, width = frames.shape[1:3]
    pad_h, pad_w = -height % 8, -width % 8
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    for first, second in zip(video[:-1], video[1:], strict=True):
        pair = F.pad(torch.stack([first, second]).to(device), padding, mode="replicate")
        flow = model(pair[:1], pair[1:], num_flow_updates=20)[-1]
        yield flow[0].permute(1, 2, 0).float().cpu().numpy()


def _subsample(frames: np.ndarray, fps: float | None) -> np.ndarray:
    """VBench's frame subsampling: every ``max(1, round(fps / 8))``-th frame (about 8 fps)."""
    return frames if fps is None else frames[:: max(1, round(fps / 8))]


def motion_metrics(
    video: VideoLike,
    flow: str = "farneback",
    fps: float | None = None,
    base_threshold: float = VBENCH_BASE_THRESHOLD,
    device: str | torch.device = "cpu",
) -> MotionResult:
    """VBench's dynamic degree of one video, and its mean flow magnitude.

    The rule, from ``vbench/dynamic_degree.py`` (Vchitect/VBench, newest version f9d345a,
    2024-12-31):

    1. If the video's ``fps`` is known (VBench reads it from the mp4), keep every
       ``max(1, round(fps / 8))``-th frame, i.e. about 8 frames per second; image folders
       (here: ``fps=None``) are used as they are.
    2. For each consecutive pair, compute the optical flow (VBench: RAFT, raft-things weights,
       20 iterations) and score the pair by the mean of the largest ``int(h * w * 0.05)`` flow
       magnitudes ``sqrt(u^2 + v^2)`` (the top 5% of pixels).
    3. The threshold is ``6.0 * min(h, w) / 256`` pixels (h, w of the frames before padding).
    4. The video is dynamic when at least ``round(4 * n / 16)`` pairs (n: the number of frames
       after step 1; Python's round, so halves go to even) score above the threshold: 4 pairs
       for a 16-frame video. As in VBench, a video whose requirement rounds to 0 (2 frames) is
       dynamic whatever its flow.

    Args:
        video: uint8 ``[f, h, w, 3]`` or a list of PIL images.
        flow: ``"farneback"`` (OpenCV, offline, the default) or ``"raft"`` (torchvision's
            RAFT-large, needs torchvision and its cached weights). VBench's numbers are RAFT's.
        fps: the video's frame rate, for step 1; ``None`` keeps every frame.
        base_threshold: 6.0 in VBench; the CustomCrafter authors' ``eval/eval_dd.py`` uses 4.0
            (``CUSTOMCRAFTER_BASE_THRESHOLD``) and otherwise the same rule.
        device: where RAFT runs.
    """
    frames = _subsample(_video_array(video), fps)
    if len(frames) < 2:
        raise UserError("motion needs a video of at least two frames (after fps subsampling)")
    height, width = frames.shape[1:3]
    threshold = base_threshold * min(height, width) / 256.0
    required = round(4 * len(frames) / 16)
    if flow == "farneback":
        flows = _farneback_flows(frames)
    elif flow == "raft":
        flows = _raft_flows(frames, torch.device(device))
    else:
        raise UserError(f"unknown optical flow method {flow!r}; use 'farneback' or 'raft'")
    scores, means = [], []
    for pair_flow in flows:
        magnitude = np.sqrt(np.square(pair_flow[..., 0]) + np.square(pair_flow[..., 1]))
        scores.append(_top_fraction_mean(magnitude))
        means.append(float(magnitude.mean()))
    above = sum(score > threshold for score in scores)
    return MotionResult(
        dynamic=above >= required,
        mean_magnitude=float(np.mean(means)),
        pair_scores=scores,
        threshold=threshold,
        required_pairs=required,
    )


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
) -> VideoMetrics:
    """Every metric the given scorers allow: CLIP-T needs ``clip`` and a prompt, CLIP-I and
    DINO-I need reference images, T.Cons and motion need two frames or more. Motion uses
    Farneback flow (see :func:`motion_metrics` for ``fps``)."""
    frames = _video_array(video)
    result = VideoMetrics()
    if clip is not None:
        if prompt:
            result.clip_t = clip.clip_t(frames, prompt)
        if references:
            result.clip_i = clip.clip_i(frames, references)
        if len(frames) > 1:
            result.t_cons = clip.temporal_consistency(frames)
    if dino is not None and references:
        result.dino_i = dino.dino_i(frames, references)
    if motion and len(_subsample(frames, fps)) > 1:
        moved = motion_metrics(frames, fps=fps)
        result.dynamic = moved.dynamic
        result.flow_magnitude = moved.mean_magnitude
    return result


def _embed_images(scorer, images, embed) -> torch.Tensor:
    """L2-normalised ``embed(pixel_values)`` of ``images`` in batches of ``BATCH_SIZE``
    (float32, on the CPU); ``scorer`` has ``processor``, ``model`` and ``device``."""
    pictures = _image_list(images)
    if not pictures:
        raise UserError("no images to embed")
    chunks = []
    for start in range(0, len(pictures), BATCH_SIZE):
        pixels = scorer.processor(images=pictures[start : start + BATCH_SIZE], return_tensors="pt")
        pixels = pixels["pixel_values"].to(scorer.device, _model_dtype(scorer.model))
        chunks.append(embed(pixels).float())
    # the authors divide each embedding by its norm before taking dot products
    return F.normalize(torch.cat(chunks), dim=-1).cpu()
