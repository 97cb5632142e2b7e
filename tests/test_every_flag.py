"""Every flag of every command, given hostile values: the outcome is exit 0, or exit 2 with
one ``error:`` line; never a traceback; and no file that existed before has changed.

Hypothesis draws (flag, value) pairs per command from the parser itself, so a flag added
later is drawn too. Each command starts from a small command line that works on the tiny
models; the commands whose real work takes minutes (the demo, the app's server, training the
shapes model, a benchmark run, a checkpoint conversion) have that work replaced after their
input is checked: what is under test is the input."""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import identifier_subject, learn_tiny_subject, write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customcrafter.cli import build_parser, main
from customcrafter.io import write_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: values a hostile user types; FILE, DIR, MISSING and UNDER_FILE become paths
VALUES = [
    "-1", "0", "1", "2.5", "1e30", "nan", "inf", "", "abc", str(2**64), "-0.5",
    "FILE", "DIR", "MISSING", "UNDER_FILE",
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """What the commands read: photos, a tiny subject, a tiny-wan subject, a video, a
    benchmark spec. None of it may change."""
    root = tmp_path_factory.mktemp("world")
    learn_tiny_subject(root)
    identifier_subject(root / "wan" / "subject.safetensors")
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    write_video(root / "video.mp4", frames)
    write_images(root / "data" / "dog")
    spec = {
        "name": "tiny", "output_dir": "out", "data_root": str(root / "data"), "base": "tiny",
        "seeds": [0], "generation": {"num_inference_steps": 2, "num_frames": 2},
        "metrics": {"motion": True},
        "subjects": [{"name": "dog", "images": "dog", "class_word": "dog",
                      "prompts": ["a <new1> dog running"]}],
        "methods": [{"name": "m", "train": {"max_train_steps": 1, "prior_loss_weight": 0}}],
    }  # fmt: skip
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    torch.save({"state_dict": {}}, root / "model.ckpt")
    return root


def _baselines(world: Path, out: Path) -> dict[tuple[str, ...], list[str]]:
    """A command line per command that works (fast) on the tiny models; outputs in ``out``."""
    subject, wan = str(world / "subject"), str(world / "wan")
    return {
        ("train",): ["train", "--base", "tiny", "--instance-data-dir", str(world / "photos"),
                     "--instance-prompt", "a <new1> dog", "--prior-loss-weight", "0",
                     "--output-dir", str(out / "run"), "--max-train-steps", "1",
                     "--train-frames", "2"],
        ("generate",): ["generate", "--subject", subject, "--prompt", "a <new1> dog",
                        "--out", str(out / "v.mp4"), "--steps", "6", "--num-frames", "2"],
        ("plan",): ["plan", "--base", "tiny", "--task", "train", "--vram", "1"],
        ("export",): ["export", wan, "--out", str(out / "lora.safetensors")],
        ("eval",): ["eval", "--video", str(world / "video.mp4")],
        ("probe", "commitment"): ["probe", "commitment", "--base", "tiny", "--output-dir",
                                  str(out / "p"), "--samples", "1", "--steps", "2",
                                  "--grid", "0,1"],
        ("probe", "bands"): ["probe", "bands", "--subject", subject, "--prompt",
                             "a <new1> dog", "--output-dir", str(out / "b"), "--samples", "1",
                             "--steps", "2", "--bands", "1"],
        ("benchmark",): ["benchmark", str(world / "spec.yaml"), "--output-dir", str(out / "x")],
        ("demo",): ["demo", "--output-dir", str(out / "demo")],
        ("app",): ["app", "--base", "tiny", "--output-dir", str(out / "app"), "--port", "7999"],
        ("convert",): ["convert", "videocrafter2", str(world / "model.ckpt"), str(out / "c")],
        ("shapes", "train-base"): ["shapes", "train-base", "--out", str(out / "s")],
        ("shapes", "evaluate-base"): ["shapes", "evaluate-base", "--base", "tiny"],
    }  # fmt: skip


def _parser_of(command: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def _options(command: tuple[str, ...]) -> list[tuple[str, bool]]:
    """``(option, takes a value)`` of every option of ``command``; positionals as
    ``#N`` (their place)."""
    options, place = [], 0
    for action in _parser_of(command)._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            options.append((action.option_strings[-1], action.nargs != 0))
        else:
            options.append((f"#{place}", True))
            place += 1
    return options


def _value(kind: str, here: Path) -> str:
    if kind == "FILE":
        (here / "given.txt").write_text("mine")
        return str(here / "given.txt")
    if kind == "DIR":
        (here / "given").mkdir(exist_ok=True)
        (here / "given" / "keep.txt").write_text("mine")
        return str(here / "given")
    if kind == "MISSING":
        return str(here / "missing" / "thing")
    if kind == "UNDER_FILE":
        (here / "blocker").write_text("mine")
        return str(here / "blocker" / "thing")
    return kind


def _snapshot(*folders: Path) -> dict:
    return {
        str(p): p.read_bytes()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".customcrafter.lock" not in p.name
    }


def _replace_the_long_work(monkeypatch):
    """The commands whose real work takes minutes stop once their input is checked."""

    def done(*args, **kwargs):
        return Path(tempfile.gettempdir())

    class Page:
        def launch(self, **kwargs):
            pass

    monkeypatch.setattr("customcrafter.shapes.demo.run_demo", done)
    monkeypatch.setattr("customcrafter.app.ui.build_app", lambda session: Page())
    monkeypatch.setattr("customcrafter.shapes.train_base.train_base", done)
    monkeypatch.setattr("customcrafter.models.registry.convert_checkpoint", done)
    monkeypatch.setattr("customcrafter.benchmark.run_benchmark", done)
    monkeypatch.setattr("customcrafter.benchmark.write_reports", done)
    monkeypatch.setattr("customcrafter.shapes.evaluate.evaluate_base", lambda *a, **k: {})
    monkeypatch.setattr("customcrafter.shapes.evaluate.format_report", lambda report: "")


COMMANDS = list(_baselines(Path("w"), Path("o")))


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_hostile_values_for_every_flag_end_in_a_clean_refusal_or_work(
    world, tmp_path, monkeypatch, capsys, command
):
    pytest.importorskip("gradio")  # the app's command imports it
    _replace_the_long_work(monkeypatch)
    monkeypatch.chdir(tmp_path)  # a value taken as a relative path lands here
    options = _options(command)
    examples = max(12, 2 * len(options))  # about two values per option

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(option=st.sampled_from(options), value=st.sampled_from(VALUES))
    def check(option, value):
        here = Path(tempfile.mkdtemp(dir=tmp_path))
        argv = _baselines(world, here / "out")[command]
        name, takes_value = option
        given_value = _value(value, here)
        if name.startswith("#"):  # a positional (they follow the command's words): replace it
            argv = list(argv)
            argv[len(command) + int(name[1:])] = given_value
        else:
            argv = [*argv, name, given_value] if takes_value else [*argv, name]
        before = _snapshot(world, here)
        code = main(["-q", *argv])
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(lines) == 1, (argv, err)
        after = _snapshot(world, here)
        changed = [path for path, data in before.items() if after.get(path) != data]
        assert not changed, (argv, changed)
        shutil.rmtree(here, ignore_errors=True)

    check()


def test_the_flags_drawn_cover_every_command():
    """The table above names every command the parser has."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = set()
    for name, child in sub.choices.items():
        nested = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
        names |= {(name, n) for n in nested[0].choices} if nested else {(name,)}
    assert names == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_each_starting_command_line_works(world, tmp_path, monkeypatch, capsys, command):
    """The command lines the hostile values are added to work as they are, so a refusal
    above is the value's doing."""
    pytest.importorskip("gradio")
    _replace_the_long_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    argv = _baselines(world, tmp_path / "out")[command]
    assert main(["-q", *argv]) == 0, capsys.readouterr().err
