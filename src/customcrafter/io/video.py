"""Writing videos as mp4 (H.264 through PyAV) or gif (Pillow), atomically, and reading them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .files import atomic_path, check_output_file

VIDEO_SUFFIXES = (".mp4", ".gif")
#: what read_video takes
READ_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".mkv", ".avi")


def to_uint8_frames(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[3, f, h, w]`` floats in ``[0, 1]`` -> ``[f, h, w, 3]`` uint8 (uint8 input passes)."""
    if isinstance(video, np.ndarray) and video.dtype == np.uint8:
        return video
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, f, h, w], got shape {tuple(video.shape)}")
    frames = (video.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def check_output_path(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite``; check the suffix, and that
    the file can be written (``files.check_output_file``)."""
    return check_output_file(path, overwrite, VIDEO_SUFFIXES)


def write_video(
    path: str | Path,
    video,
    fps: int = 8,
    lossless: bool = False,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
) -> Path:
    """Write ``video`` (``[3, f, h, w]`` in ``[0, 1]`` or ``[f, h, w, 3]`` uint8) to ``path``;
    the format follows the suffix. ``lossless``: an mp4 that decodes to exactly these RGB
    frames (x264's RGB mode at quality 0; fewer players read it). ``audio``
    (``[channels, samples]`` in ``[-1, 1]`` at ``sample_rate``): the mp4's sound track, AAC
    (a gif has none). The file appears only once complete."""
    path = Path(path)
    frames = to_uint8_frames(video)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise UserError(f"cannot write {path.suffix!r} videos; use .mp4 or .gif")
    if audio is not None and not sample_rate:
        raise ValueError("a sound track needs its sample rate")
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            _write_gif(tmp, frames, fps)
        else:
            _write_mp4(tmp, frames, fps, lossless, audio, sample_rate)
    return path


def _write_mp4(
    path: Path,
    frames: np.ndarray,
    fps: int,
    lossless: bool = False,
    audio=None,
    sample_rate: int | None = None,
) -> None:
    f, h, w, _ = frames.shape
    if not lossless:
        # yuv420p needs even sides: pad by repeating the last row / column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        # without macroblock-tree rate control: with it, x264 encodes the same frames
        # differently from one process to the next, and so moves every score read off the file
        quality = "0" if lossless else "17"
        stream.options = {"crf": quality, "preset": "medium", "x264-params": "mbtree=0"}
        sound = _add_audio(container, audio, sample_rate) if audio is not None else None
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _write_audio(container, *sound)


def _add_audio(container, audio, sample_rate: int):
    """An AAC stream for ``audio`` ``[channels, samples]`` (mono or stereo) and its samples
    as planar float32."""
    samples = np.asarray(torch.as_tensor(audio).detach().float().cpu().clamp(-1, 1))
    if samples.ndim != 2 or samples.shape[0] not in (1, 2):
        raise ValueError(f"expected sound [channels (1 or 2), samples], got {samples.shape}")
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    stream = container.add_stream("aac", rate=int(sample_rate), layout=layout)
    return stream, np.ascontiguousarray(samples, dtype=np.float32), layout


def _write_audio(container, stream, samples: np.ndarray, layout: str) -> None:
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
    frame.sample_rate = stream.rate
    frame.pts = 0
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def read_audio(path: str | Path) -> tuple[np.ndarray, int] | None:
    """The sound track of a video file as ``([channels, samples] float32, sample rate)``,
    ``None`` where it has none."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(stream)]
        rate = stream.rate
    if not chunks:
        return None
    return np.concatenate(chunks, axis=1).astype(np.float32), int(rate)


def _write_gif(path: Path, frames: np.ndarray, fps: int) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
    )


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as ``[f, h, w, 3]`` uint8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"video {path} does not exist")
    if path.suffix.lower() not in READ_SUFFIXES:
        raise UserError(f"{path} is not a video; give an {', '.join(READ_SUFFIXES)} file")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise UserError(f"could not read {path} as a video: {exc}") from None
    if not frames:
        raise UserError(f"{path} holds no video frames")
    return np.stack(frames)


def list_videos(folder: str | Path, what: str = "video") -> list[Path]:
    """The videos in ``folder``, sorted, each decoded once to check it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES)
    if not paths:
        raise UserError(f"{what} folder {folder} holds no videos ({', '.join(READ_SUFFIXES)})")
    for path in paths:
        read_video(path)
    return paths
