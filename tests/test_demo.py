"""The README's main command runs end to end and writes what it promises."""

import json

import pytest
from PIL import Image

from customcrafter.cli import main
from customcrafter.io import read_video
from customcrafter.shapes.demo import DEMO_METHODS, DEMO_PROMPTS, SEEDS


@pytest.mark.slow
def test_demo_learns_the_subject_and_writes_videos_sheet_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--output-dir", str(out), "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert "subject sim" in printed and "dwvs" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["summary"]) == list(DEMO_METHODS)
    rows = metrics["videos"]
    assert len(rows) == len(DEMO_PROMPTS) * len(DEMO_METHODS) * len(SEEDS)
    for row in rows:
        for suffix in (".mp4", ".gif"):
            assert read_video(row["video"].replace(".mp4", suffix)).shape == (8, 32, 32, 3)
        assert 0.0 <= row["subject_similarity"] <= 1.0
        assert ("<new1>" in row["prompt"]) == (row["method"] != "base")
    sheet = Image.open(out / "contact-sheet.png")
    assert sheet.size == (260 + 8 * (32 * 4 + 2), len(rows) * (32 * 4 + 2))
    assert (out / "subject" / "subject.safetensors").is_file()
    assert main(["-q", "demo", "--output-dir", str(out), "--steps", "1"]) == 0  # reruns replace it


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    assert main(["-q", "demo", "--output-dir", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "user data"
