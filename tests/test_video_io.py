"""Videos are real files: mp4 through PyAV, gif through Pillow, written atomically."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from customcrafter.errors import UserError
from customcrafter.io import read_video, write_video
from customcrafter.io.video import check_output_path


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_written_videos_decode_with_their_frame_count_size_and_content(tmp_path, suffix):
    video = torch.zeros(3, 6, 32, 48)
    video[0] = torch.linspace(0, 1, 6)[:, None, None]  # red ramps up over time
    path = write_video(tmp_path / f"clip{suffix}", video, fps=8)
    frames = read_video(path)
    assert frames.shape == (6, 32, 48, 3)
    red = frames[..., 0].reshape(6, -1).mean(1)
    assert np.all(np.diff(red) > 20)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_odd_sizes_are_padded_for_h264(tmp_path):
    frames = read_video(write_video(tmp_path / "odd.mp4", torch.rand(3, 2, 31, 45), fps=4))
    assert frames.shape == (2, 32, 46, 3)


def test_existing_outputs_and_unknown_suffixes_are_refused(tmp_path):
    existing = tmp_path / "v.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(UserError, match="--overwrite"):
        check_output_path(existing, overwrite=False)
    assert existing.read_bytes() == b"keep me"
    assert check_output_path(existing, overwrite=True) == existing
    with pytest.raises(UserError, match=".mp4 or .gif"):
        check_output_path(tmp_path / "v.avi", overwrite=False)


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, torch.rand(3, 2, 16, 16), fps=4)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_video(path, torch.rand(2, 16, 16), fps=4)
    assert path.read_bytes() == before


ENCODE = """
import sys
import numpy as np
import torch
from customcrafter.io import write_video
from customcrafter.shapes.world import ClipSpec, render_clip

x = torch.randn(256, 256)  # what sampling leaves behind in a process, before it writes
for _ in range(20):
    x = torch.nn.functional.scaled_dot_product_attention(x[None, None], x[None, None], x[None, None])[0, 0]
clip = render_clip(ClipSpec("star", "red", "moving right", "gray"), 0).astype(float)
noisy = np.clip(clip + np.random.default_rng(0).normal(0, 12, clip.shape), 0, 255)
write_video(sys.argv[1], noisy.astype(np.uint8), 8)
"""


def test_the_same_frames_make_the_same_mp4_in_every_process(tmp_path):
    """Scores are read off the files, so a file must not depend on the process that wrote
    it (x264's macroblock-tree rate control made it differ from run to run)."""
    paths = [tmp_path / f"{i}.mp4" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", ENCODE, str(path)], check=True, capture_output=True)
    assert len({path.read_bytes() for path in paths}) == 1
