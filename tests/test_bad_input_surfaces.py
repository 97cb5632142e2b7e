"""Bad input, round two: the surfaces that came after the first round (export, subject files,
the probes, the app, Wan settings, a full disk, two runs at once). Each case ends with exit
code 2 and one ``error:`` line that says what to change, or works; never a traceback, and
the user's files as they were. Numbers are the items of the issue that found them."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from conftest import identifier_subject, write_images
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_bad_input import refused, snapshot, train_args

from customcrafter.cli import main
from customcrafter.errors import UserError
from customcrafter.models.wan import build_tiny_wan
from customcrafter.subject import SpatialSubjectModule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run on the tiny model."""
    root = tmp_path_factory.mktemp("trained")
    write_images(root / "photos")
    assert main(train_args(root / "photos", root / "subject")) == 0
    return root


@pytest.fixture
def wan_subject(tmp_path):
    """A tiny-wan subject named by an identifier word (so it exports without dropping)."""
    return identifier_subject(tmp_path / "subject.safetensors", 0.1)


def _rewrite(source, target, metadata=None, tensors=None):
    """``source`` written to ``target`` with its metadata and tensors changed."""
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["customcrafter"])
    values = load_file(source)
    meta = metadata(meta) if metadata else meta
    values = tensors(values) if tensors else values
    save_file(values, str(target), metadata={"customcrafter": json.dumps(meta)})
    return target


def _generate(subject, out, *extra):
    argv = ["-q", "generate", "--subject", str(subject), "--prompt", "a <new1> dog"]
    return [*argv, "--out", str(out), "--steps", "6", *map(str, extra)]


# --- 1. every number a user can type has a range ---------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "-1"], "--seed must be at least 0 (and at most 4294967295), got -1"),
        (["--seed", str(2**64)], "--seed must be between 0 and 4294967295"),
        (["--cache-views", "1000000"], "--cache-views must be between 1 and 100"),
        (["--learning-rate", "1e30"], "--learning-rate must be at most 1"),
    ],
)
def test_training_numbers_have_a_range(trained, tmp_path, capsys, extra, message):
    refused(train_args(trained / "photos", tmp_path / "out", *extra), capsys, message)
    assert not (tmp_path / "out" / "subject.safetensors").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--lambda-l", "1e30"], "--lambda-l must be between 0 and 2"),
        (["--guidance-scale", "1e30"], "--guidance-scale must be between 0 and 100"),
        (["--guidance-scale-2", "1e30"], "--guidance-scale-2 must be between 0 and 100"),
        (["--constant-weight", "-1"], "--constant-weight must be at least 0 (and at most 2)"),
        (["--vae-chunk-size", "0"], "the VAE chunk size must be at least 1"),
    ],
)
def test_generate_numbers_have_a_range(trained, tmp_path, capsys, extra, message):
    out = tmp_path / "v.mp4"
    refused(_generate(trained / "subject", out, *extra), capsys, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "commitment", "--base", "tiny", "--steps", "-3"], "--steps must be at least 1"),
        (["probe", "commitment", "--base", "tiny", "--samples", "0"], "argument --samples"),
        (["probe", "commitment", "--base", "tiny", "--grid", "0,-5"], "argument --grid"),
        (["probe", "commitment", "--base", "tiny", "--eta", "-1"], "--eta must be at least 0"),
        (["probe", "bands", "--subject", "S", "--steps", "-1"], "--steps must be at least 1"),
        (["probe", "bands", "--subject", "S", "--samples", "-2"], "must be at least 1"),
        (["probe", "bands", "--subject", "S", "--weight", "9"], "argument --weight"),
        (["app", "--port", "99999"], "argument --port: must be between 1 and 65535"),
        (["demo", "--steps", "0"], "argument --steps: must be at least 1"),
        (["shapes", "evaluate-base", "--seeds", "0"], "argument --seeds"),
        (["generate", "--prompt", "x"], "give --prompt and --out (or --prompts FILE"),
        (["generate", "--prompts", "P", "--seeds", "1,x"], "argument --seeds: comma-separated"),
    ],
)
def test_other_commands_refuse_numbers_out_of_range_before_any_work(
    trained, tmp_path, capsys, argv, message
):
    argv = [a.replace("S", str(trained / "subject")) if a == "S" else a for a in argv]
    if argv[0] == "probe":
        argv += ["--output-dir", str(tmp_path / "probe")]
    refused(["-q", *argv], capsys, message)
    assert not (tmp_path / "probe").exists() or not any((tmp_path / "probe").iterdir())


# --- 2 and 4. one checked reader of subject files -----------------------------------------------
def _nan_lora(values):
    return {
        k: (torch.full_like(v, float("nan")) if "lora_B" in k else v) for k, v in values.items()
    }


def _wrong_shape(values):
    key = next(k for k in values if "lora_A" in k)
    return {**values, key: torch.zeros(3, 5)}


def _missing_one(values):
    first = next(k for k in values if "lora_B" in k)
    return {k: v for k, v in values.items() if k != first}


def _huge_b(values):
    return {k: (torch.full_like(v, 1e20) if "lora_B" in k else v) for k, v in values.items()}


DAMAGE = [
    (None, _nan_lora, "NaN or infinite"),
    (None, _wrong_shape, "not [4, in] and [out, 4]"),
    (None, _missing_one, "does not hold the tensors its metadata names"),
    (None, _huge_b, "values beyond 10000"),
    (lambda m: {**m, "lora_alpha": float("nan")}, None, "lora_alpha"),
    (lambda m: {**m, "lora_alpha": 1e30}, None, "lora_alpha"),
    (lambda m: {**m, "format_version": "2"}, None, "format_version"),
    (lambda m: {**m, "format_version": None}, None, "format_version"),
    (lambda m: {**m, "rank": 0}, None, "rank"),
]


@pytest.mark.parametrize(("metadata", "tensors", "message"), DAMAGE)
def test_export_reads_subject_files_through_the_checked_reader(
    wan_subject, tmp_path, capsys, metadata, tensors, message
):
    bad = _rewrite(wan_subject, tmp_path / "bad.safetensors", metadata, tensors)
    out = tmp_path / "lora.safetensors"
    refused(["export", str(bad), "--out", str(out)], capsys, message)
    assert not out.exists()


@pytest.mark.parametrize(("metadata", "tensors", "message"), DAMAGE)
def test_generate_reads_subject_files_through_the_same_reader(
    trained, tmp_path, capsys, metadata, tensors, message
):
    source = trained / "subject" / "subject.safetensors"
    bad = _rewrite(source, tmp_path / "bad.safetensors", metadata, tensors)
    refused(_generate(bad, tmp_path / "v.mp4"), capsys, message)


@pytest.mark.parametrize(
    ("metadata", "tensors", "message"),
    [
        (
            lambda m: {**m, "targets": ["nowhere.to_q"]},
            lambda t: {
                "nowhere.to_q.lora_A.weight": torch.zeros(4, 8),
                "nowhere.to_q.lora_B.weight": torch.zeros(8, 4),
                "token_embeddings": t["token_embeddings"],
            },
            "adapts layers that 'tiny' does not have",
        ),
        (
            None,
            lambda t: {**t, "token_embeddings": torch.zeros(1, 7)},
            "token embeddings are 7 wide",
        ),
    ],
)
def test_a_subject_that_does_not_fit_its_base_is_refused(
    trained, tmp_path, capsys, metadata, tensors, message
):
    source = trained / "subject" / "subject.safetensors"
    bad = _rewrite(source, tmp_path / "bad.safetensors", metadata, tensors)
    refused(_generate(bad, tmp_path / "v.mp4"), capsys, message)


# --- 3. export's output path ----------------------------------------------------------------
def test_export_never_writes_over_the_subject_it_reads(wan_subject, capsys):
    before = wan_subject.read_bytes()
    argv = ["export", str(wan_subject.parent), "--out", str(wan_subject), "--overwrite"]
    refused(argv, capsys, "is a file this command reads")
    assert wan_subject.read_bytes() == before


def test_export_checks_its_output_path_before_any_work(wan_subject, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    argv = ["export", str(wan_subject), "--out"]
    refused([*argv, str(blocker / "lora.safetensors")], capsys, "is a file, not a folder")
    (tmp_path / "taken.safetensors").mkdir()
    taken = str(tmp_path / "taken.safetensors")
    refused([*argv, taken, "--overwrite"], capsys, "is a folder, not a file name")
    assert blocker.read_text() == "mine"


# --- 5. the app --------------------------------------------------------------------------------
def test_a_damaged_subject_is_listed_and_does_not_take_the_app_down(trained, tmp_path):
    from customcrafter.app.jobs import AppSession
    from customcrafter.app.workspace import Workspace

    workspace = Workspace(tmp_path / "app")
    good = workspace.subject_dir("good")
    shutil.copytree(trained / "subject", good)
    bad = workspace.subject_dir("bad")
    bad.mkdir(parents=True)
    _rewrite(
        good / "subject.safetensors",
        bad / "subject.safetensors",
        metadata=lambda m: {**m, "format_version": "two"},
    )
    states = {e.name: e.state for e in workspace.subjects()}
    assert states == {"good": "learnt", "bad": "damaged"}
    assert workspace.learnt() == ["good"]
    session = AppSession(workspace, base="tiny", device="cpu")
    with pytest.raises(UserError, match="damaged subject file.*train again"):
        session.learn("bad", None, "a <new1> dog", "a dog", {})


def test_the_app_checks_its_base_and_port_at_start(tmp_path, capsys):
    refused(["app", "--base", "tinyy", "--output-dir", str(tmp_path / "a")], capsys, "tinyy")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        argv = ["app", "--base", "tiny", "--port", str(port), "--output-dir", str(tmp_path / "a")]
        refused(argv, capsys, f"cannot serve on 127.0.0.1:{port}")


def test_a_job_waits_for_the_one_before_it_to_stop(trained, tmp_path):
    """A stopped (cancelled) training ends at its next step, with a checkpoint, before the
    next job on the device starts: never two trainings at once."""
    import threading

    from customcrafter.app.jobs import AppSession, TrainingStoppedByUser
    from customcrafter.app.workspace import Workspace

    session = AppSession(Workspace(tmp_path / "app"), base="tiny", device="cpu")
    photos = sorted(str(p) for p in (trained / "photos").iterdir())
    fast = {"max_train_steps": "50", "prior_loss_weight": "0", "train_frames": "2"}
    started, order, errors = threading.Event(), [], []

    def first():
        def on_step(step, total, logs):
            started.set()

        try:
            session.learn("one", photos, "a <new1> dog", "a dog", fast, on_step)
        except TrainingStoppedByUser:
            order.append("first stopped")

    def second():
        started.wait()
        session.stop()  # the page's cancel
        try:
            session.learn("two", photos, "a <new1> dog", "a dog", {**fast, "max_train_steps": "1"})
            order.append("second done")
        except UserError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and order == ["first stopped", "second done"]
    assert (session.workspace.subject_dir("one") / "checkpoints").is_dir()


# --- 6. defaults that refuse themselves ------------------------------------------------------
def test_the_band_probe_runs_on_a_base_with_fewer_steps_than_the_papers_k(tmp_path):
    module = SpatialSubjectModule.create(build_tiny_wan(), {"<new1>": "dog"})
    subject = module.save(tmp_path / "subject.safetensors")
    argv = ["-q", "probe", "bands", "--subject", str(subject), "--prompt", "a <new1> dog"]
    assert main([*argv, "--samples", "1", "--bands", "2", "--output-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bands.json").read_text())["rows"]
    assert "DWVS (paper, k 3 of 4 steps)" in [r["label"] for r in rows]


# --- 8. a full disk --------------------------------------------------------------------------
def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _fills_the_disk(path, data):
    """``write_json`` on a disk that fills half way through the file."""
    from customcrafter.io.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("{")
        _full()


@pytest.mark.parametrize(
    ("command", "target"),
    [
        ("generate", "customcrafter.io.video._write_mp4"),
        ("export", "customcrafter.subject.export.save_file"),
        ("bands", "customcrafter.io.files.write_json"),
        ("train", "customcrafter.subject.module.save_file"),
    ],
)
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    trained, wan_subject, tmp_path, capsys, monkeypatch, command, target
):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(trained)
    argv = {
        "generate": _generate(trained / "subject", out / "v.mp4"),
        "export": ["export", str(wan_subject), "--out", str(out / "lora.safetensors")],
        "bands": ["-q", "probe", "bands", "--subject", str(trained / "subject"), "--prompt",
                  "a <new1> dog", "--samples", "1", "--steps", "2", "--bands", "1",
                  "--output-dir", str(out)],
        "train": train_args(trained / "photos", out / "run"),
    }[command]  # fmt: skip
    monkeypatch.setattr(target, _full if command != "bands" else _fills_the_disk)
    line = refused(argv, capsys, "No space left on device")
    assert "free there" in line
    partial = [p for p in out.rglob("*") if ".partial" in p.name]
    assert not partial, partial
    assert snapshot(trained) == before


# --- 9. two runs into one folder ---------------------------------------------------------------
def test_a_second_run_into_a_folder_in_use_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".customcrafter.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"})
    )
    refused(train_args(trained / "photos", out), capsys, "being written by another training run")
    assert not (out / "subject.safetensors").exists()


def test_a_lock_left_by_a_run_that_died_is_named_and_taken_over(trained, tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".customcrafter.lock"
    lock.write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "since": "x"}))
    assert main(train_args(trained / "photos", out)) == 0
    assert f"process {dead}" in caplog.text and not lock.exists()
    assert (out / "subject.safetensors").is_file()


# --- 7. silently extreme or silently changed ---------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda photos, argv: write_images(photos, count=1, seed=9, prefix="new"), "photos"),
        (lambda photos, argv: argv.extend(["--cache-inputs"]), "cache_inputs None -> True"),
        (lambda photos, argv: argv.extend(["--rank", "2"]), "rank 4 -> 2"),
        (
            lambda photos, argv: argv.extend(["--max-train-steps", "1"]),
            "beyond --max-train-steps 1",
        ),
    ],
    ids=["photos", "cache", "rank", "steps"],
)
def test_resuming_with_other_inputs_or_settings_is_refused(
    trained, tmp_path, capsys, change, message
):
    photos, out = tmp_path / "photos", tmp_path / "out"
    shutil.copytree(trained / "photos", photos)
    shutil.copytree(trained / "subject", out)
    (out / "subject.safetensors").unlink()  # stopped after two checkpoints
    argv = train_args(photos, out, "--resume-from-checkpoint", "latest")
    change(photos, argv)
    before = snapshot(out)
    refused(argv, capsys, message)
    assert snapshot(out) == before


def test_a_low_noise_only_subject_exports_only_as_the_low_expert(tmp_path, capsys):
    model = build_tiny_wan(two_experts=True)
    module = SpatialSubjectModule.create(model, {}, identifier="sks", experts="low")
    path = module.save(tmp_path / "subject.safetensors")
    out = tmp_path / "lora.safetensors"
    refused(["export", str(path), "--out", str(out)], capsys, "--expert low")
    assert not out.exists()
    assert main(["export", str(path), "--out", str(out), "--expert", "low"]) == 0


def test_ctrl_c_during_export_says_whether_the_file_was_written(
    wan_subject, tmp_path, capsys, monkeypatch
):
    import customcrafter.subject.export as export

    out = tmp_path / "lora.safetensors"
    argv = ["export", str(wan_subject), "--out", str(out)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_file", interrupted)
    assert main(argv) == 130
    assert f"interrupted before {out} was complete: it is not written" in capsys.readouterr().err
    monkeypatch.undo()
    real = export.export_subject

    def written_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_subject", written_then_interrupted)
    assert main(argv) == 130
    assert f"interrupted after {out} was written: it is complete" in capsys.readouterr().err
    assert out.is_file()


def test_a_full_disk_during_an_overwrite_keeps_the_earlier_results(
    trained, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "subject"
    shutil.copytree(trained / "subject", out)
    before = snapshot(out)
    monkeypatch.setattr("customcrafter.subject.module.save_file", _full)
    refused(train_args(trained / "photos", out, "--overwrite"), capsys, "No space left on device")
    assert snapshot(out) == before


def test_the_score_list_takes_a_video_made_after_the_page_loaded(trained, tmp_path):
    gr = pytest.importorskip("gradio")
    from customcrafter.app.jobs import AppSession
    from customcrafter.app.ui import build_app
    from customcrafter.app.workspace import Workspace

    session = AppSession(Workspace(tmp_path / "app"), base="tiny", device="cpu")
    page = build_app(session)  # no videos yet: the list starts empty
    scored = next(
        block
        for block in page.blocks.values()
        if isinstance(block, gr.Dropdown) and block.elem_id == "scored-video"
    )
    assert scored.preprocess("20261204-120000-0-star-0-dwvs.mp4") == (
        "20261204-120000-0-star-0-dwvs.mp4"
    )
