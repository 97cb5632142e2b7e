"""The README's main command runs end to end and writes what it promises."""

import json

import pytest

from customcrafter.cli import main
from customcrafter.io import read_video


@pytest.mark.slow
def test_demo_trains_and_writes_three_videos_per_prompt(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--output-dir", str(out), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "noise" in printed  # it says plainly that the tiny model's output is noise
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 6
    for row in rows:
        assert read_video(row["video"]).shape == (8, 32, 32, 3)
    assert (out / "subject" / "subject.safetensors").is_file()
    assert main(["-q", "demo", "--output-dir", str(out), "--steps", "1"]) == 0  # reruns replace it


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    assert main(["-q", "demo", "--output-dir", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "user data"
