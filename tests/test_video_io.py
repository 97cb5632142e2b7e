"""Videos are real files: mp4 through PyAV, gif through Pillow, written atomically."""

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
