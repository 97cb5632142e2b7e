"""The app's jobs on the tiny model, without the page: the same calls the page makes."""

import json
import os

import pytest

from customcrafter.app.jobs import AppSession, TrainingStoppedByUser, parse_advanced
from customcrafter.app.workspace import Workspace
from customcrafter.errors import UserError
from customcrafter.shapes.world import SUBJECTS_DIR

FAST = {
    "max_train_steps": "4",
    "num_class_images": "2",
    "class_sampling_steps": "2",
    "checkpointing_steps": "2",
    "train_frames": "2",
    "learning_rate": "1e-2",
}
STAR = sorted(str(p) for p in (SUBJECTS_DIR / "striped-star").glob("*.png"))


@pytest.fixture
def session(tmp_path):
    return AppSession(Workspace(tmp_path / "app"), base="tiny", device="cpu")


def test_the_advanced_panel_reads_text_as_settings():
    values = parse_advanced(
        {
            "max_train_steps": "12",
            "height": "",
            "lora_target_override": "attn1.to_q, attn2.to_v",
            "initializer_words": "<new1>=dog",
            "augment": False,
        }
    )
    assert values == {
        "max_train_steps": "12",  # TrainConfig.validate makes it an int
        "height": None,
        "lora_target_override": ["attn1.to_q", "attn2.to_v"],
        "initializer_words": {"<new1>": "dog"},
        "augment": False,
    }


def test_validation_prompts_are_one_a_line_and_their_samples_are_shown(session):
    assert parse_advanced({"validation_prompts": "a <new1> star, left\n\n a <new1> star \n"}) == {
        "validation_prompts": ["a <new1> star, left", "a <new1> star"]
    }
    assert session.workspace.latest_samples("star") is None
    watched = {**FAST, "validation_prompts": "a <new1> star, moving left",
               "validation_inference_steps": "2", "validation_num_frames": "2",
               "validation_steps": "2"}  # fmt: skip
    session.learn("star", STAR, "a <new1> star", "a star", watched)
    sheet = session.workspace.latest_samples("star")
    assert sheet is not None and sheet.parent.name == "step-000004" and sheet.is_file()


def test_photos_are_checked_and_stored_whole(session, tmp_path):
    ws = session.workspace
    with pytest.raises(UserError, match="3 to 10 photos"):
        ws.save_photos("star", STAR[:2])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="'bad.png' could not be read"):
        ws.save_photos("star", [*STAR[:3], str(bad)])
    assert not (ws.subject_dir("star") / "photos").exists()
    folder = ws.save_photos("star", STAR)
    assert len(list(folder.glob("*.png"))) == 5
    with pytest.raises(UserError, match="subject name"):
        ws.subject_dir("../escape")


def test_learn_lists_the_subject_and_will_not_train_it_twice(session):
    steps = []
    message = session.learn(
        "star", STAR, "a <new1> star", "a star", FAST, lambda s, t, logs: steps.append((s, t))
    )
    assert "learnt in 4 steps" in message and steps[-1] == (4, 4)
    [entry] = session.workspace.subjects()
    assert (entry.name, entry.state, entry.step, entry.words) == ("star", "learnt", 4, "<new1>")
    with pytest.raises(UserError, match="already learnt"):
        session.learn("star", None, "a <new1> star", "a star", FAST)


def test_a_stopped_training_keeps_its_checkpoint_and_resumes(session):
    def stop_at_two(step, total, logs):
        if step == 2:
            session.stop()

    with pytest.raises(TrainingStoppedByUser, match="step 2"):
        session.learn("star", STAR, "a <new1> star", "a star", FAST, stop_at_two)
    [entry] = session.workspace.subjects()
    assert (entry.state, entry.step) == ("stopped", 2)
    message = session.learn("star", STAR, "a <new1> star", "a star", FAST)
    assert "resumed (with the photos it started with) and finished" in message
    assert session.workspace.subjects()[0].state == "learnt"


def test_side_by_side_writes_three_videos_and_the_weight_curve(session):
    session.learn("star", STAR, "a <new1> star", "a star", FAST)
    ticks = []
    out = session.generate(
        "star", "a <new1> star moving left", 0.4, 0.8, 1, seed=3, steps=3,
        side_by_side=True, on_step=lambda i, total: ticks.append((i, total)),
    )  # fmt: skip
    assert [label for label, _, _, _ in out.videos] == ["base model", "constant 1.0", "DWVS"]
    assert out.weights["base model"] == [0.0] * 3 and out.weights["DWVS"] == [0.4, 0.8, 0.8]
    assert out.curve.stat().st_size > 0 and ticks[-1] == (9, 9)
    for _, _, mp4, gif in out.videos:
        assert mp4.is_file() and gif.is_file()
    base = json.loads(out.videos[0][2].with_suffix(".json").read_text())
    assert base["prompt"] == "a star moving left"  # the base model sees the class word
    assert len(session.workspace.videos()) == 3
    scores = session.score(out.videos[2][2])
    assert scores["prompt"] == "a <new1> star moving left" and "flow_magnitude" in scores


def test_bad_values_are_refused_with_what_to_change(session):
    session.learn("star", STAR, "a <new1> star", "a star", FAST)
    with pytest.raises(UserError, match="<new2>.*named <new1>"):
        session.generate("star", "a <new2> star", steps=2)
    with pytest.raises(UserError, match="lambda_s must be between"):
        session.generate("star", "a <new1> star", lambda_s=5.0, steps=2)
    with pytest.raises(UserError, match="no subject 'cat'"):
        session.generate("cat", "a <new1> cat", steps=2)
    with pytest.raises(UserError, match="^--learning-rate must be more than 0"):
        session.learn("dog", STAR, "a <new1> dog", "a dog", {**FAST, "learning_rate": "-1"})
    assert not session.workspace.subject_dir("dog").exists()  # nothing written


@pytest.mark.parametrize("host,warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_the_app_binds_to_localhost_unless_told_and_warns_beyond(
    tmp_path, monkeypatch, capsys, host, warned
):
    pytest.importorskip("gradio")
    import customcrafter.app.ui as ui
    from customcrafter.cli import main

    launched = {}

    class Page:
        def launch(self, **kwargs):
            launched.update(kwargs)

    monkeypatch.setattr(ui, "build_app", lambda session: Page())
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):  # restored afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    out = tmp_path / "app"
    assert main(["app", "--output-dir", str(out), "--host", host, "--port", "7999"]) == 0
    assert os.environ["GRADIO_TEMP_DIR"] == str(out / ".uploads")  # uploads in the folder
    assert launched["server_name"] == host and launched["server_port"] == 7999
    assert launched["allowed_paths"] == [str(out)]
    assert ("warning: bound to 0.0.0.0" in capsys.readouterr().err) == warned


def test_several_prompts_one_a_line_make_a_video_each(session):
    session.learn("star", STAR, "a <new1> star", "a star", FAST)
    out = session.generate(
        "star", "a <new1> star moving left\n\na <new1> star moving up\n", steps=2, k=1
    )
    assert [(label, i) for label, i, _, _ in out.videos] == [("DWVS", 0), ("DWVS", 1)]
    assert out.prompts == ["a <new1> star moving left", "a <new1> star moving up"]
    with pytest.raises(UserError, match="at most 8 prompts"):
        session.generate("star", "\n".join(["a <new1> star"] * 9), steps=2)
