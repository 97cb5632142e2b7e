"""One PNG that shows several videos side by side, frame by frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import atomic_path


def contact_sheet(
    rows: list[tuple[str, np.ndarray]],
    scale: int = 4,
    label_width: int = 260,
    gap: int = 2,
) -> Image.Image:
    """``rows`` of ``(label, frames uint8 [f, h, w, 3])`` -> one image: a label, then the
    frames left to right, each enlarged ``scale`` times without smoothing."""
    if not rows:
        raise ValueError("no rows to draw")
    f = max(len(frames) for _, frames in rows)
    h, w = rows[0][1].shape[1:3]
    cell_w, cell_h = w * scale + gap, h * scale + gap
    sheet = Image.new("RGB", (label_width + f * cell_w, len(rows) * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, frames) in enumerate(rows):
        y = r * cell_h
        draw.multiline_text((4, y + 4), label, fill=(0, 0, 0), spacing=2)
        for i, frame in enumerate(frames):
            tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(tile, (label_width + i * cell_w, y))
    return sheet


def write_contact_sheet(path: str | Path, rows: list[tuple[str, np.ndarray]], **kwargs) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        contact_sheet(rows, **kwargs).save(tmp, format="PNG")
    return path
