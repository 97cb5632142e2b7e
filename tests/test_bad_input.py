"""Bad input, as a hostile new user gives it: every case ends with exit code 2, one line that
starts with ``error:`` and says what to do, no traceback, and the user's files as they were."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import write_images
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from customcrafter.cli import main
from customcrafter.io import write_video
from customcrafter.io.images import load_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def train_args(instance_dir, out, *extra):
    return [
        "-q", "train", "--base", "tiny", "--instance-data-dir", str(instance_dir),
        "--instance-prompt", "video of a <new1> dog", "--prior-loss-weight", "0",
        "--output-dir", str(out), "--max-train-steps", "2", "--train-frames", "2",
        "--checkpointing-steps", "1", "--checkpoints-total-limit", "5", *map(str, extra),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run on the tiny model (two checkpoints and the subject file)."""
    root = tmp_path_factory.mktemp("trained")
    write_images(root / "photos")
    assert main(train_args(root / "photos", root / "subject")) == 0
    return root


def file_metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def refused(argv, capsys, message):
    """Run the command; it must fail as bad input, in one line naming ``message``."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    return lines[0]


# --- 1. --overwrite keeps the old result until the new run has a checkpoint ---------------------
@pytest.mark.parametrize("bad", [["--base", "tinyy"], ["--height", "13"]], ids=["base", "height"])
def test_a_failed_overwrite_keeps_the_previous_results(trained, tmp_path, capsys, monkeypatch, bad):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "subject"
    shutil.copytree(trained / "subject", out)
    before = snapshot(out)
    argv = train_args(trained / "photos", out, "--overwrite", *bad)
    refused(argv, capsys, "tinyy" if "tinyy" in bad else "multiples of")
    assert snapshot(out) == before


def test_an_overwrite_replaces_the_results_once_it_has_a_checkpoint(trained, tmp_path):
    import shutil

    out = tmp_path / "subject"
    shutil.copytree(trained / "subject", out)
    old = load_file(out / "subject.safetensors")
    assert main(train_args(trained / "photos", out, "--overwrite", "--seed", "7")) == 0
    new = load_file(out / "subject.safetensors")
    assert any(not torch.equal(old[k], new[k]) for k in old)
    assert not (out / ".previous").exists()
    assert json.loads((out / "train_config.json").read_text())["seed"] == 7


# --- 2. settings that would give a useless video -------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "-3"], "--steps must be at least 1"),
        (["--lambda-l", "nan"], "--lambda-l must be a number"),
        (["--num-frames", "0"], "--num-frames must be at least 1"),
        (["--fps", "0"], "--fps must be at least 1"),
        (["--width", "0"], "--width must be at least 1"),
        (["--steps", "3", "--k", "5"], "--k 5 is more than the 3 steps"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--guidance-scale", "inf"], "--guidance-scale must be a number"),
    ],
)
def test_generate_refuses_settings_that_make_a_useless_video(
    trained, tmp_path, capsys, extra, message
):
    out = tmp_path / "video.mp4"
    argv = ["-q", "generate", "--subject", str(trained / "subject"), "--prompt", "a <new1> dog"]
    refused([*argv, "--out", str(out), *extra], capsys, message)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_the_machine_lacks_is_refused(trained, tmp_path, capsys):
    argv = ["-q", "generate", "--subject", str(trained / "subject"), "--prompt", "a <new1> dog"]
    refused([*argv, "--out", str(tmp_path / "v.mp4"), "--device", "cuda"], capsys, "no cuda")


def test_a_subject_file_with_nan_values_is_refused(trained, tmp_path, capsys):
    tensors = load_file(trained / "subject" / "subject.safetensors")
    metadata = file_metadata(trained / "subject" / "subject.safetensors")
    tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)
    argv = [
        "-q",
        "generate",
        "--subject",
        str(tmp_path / "nan.safetensors"),
        "--prompt",
        "a <new1> dog",
    ]
    refused([*argv, "--out", str(tmp_path / "v.mp4")], capsys, "NaN or infinite")


# --- 3. photos -----------------------------------------------------------------------------------
def _png_with_size(path, width, height, data: bytes):
    """A PNG whose header claims ``width x height`` over ``data`` as its pixel stream."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )  # fmt: skip


@pytest.mark.parametrize(
    ("size", "message"),
    [((30000, 30000), "scale it down"), ((4000, 3000), "could not be read")],
    ids=["huge", "truncated"],
)
def test_a_photo_that_cannot_be_decoded_is_named_before_any_model_loads(
    tmp_path, capsys, monkeypatch, size, message
):
    photos = tmp_path / "photos"
    write_images(photos, count=2)
    _png_with_size(photos / "broken.png", *size, b"\x00" * 100)
    monkeypatch.setattr("customcrafter.models.registry.build_tiny_t2v", pytest.fail)
    line = refused(train_args(photos, tmp_path / "out"), capsys, message)
    assert "broken.png" in line


def test_sixteen_bit_greyscale_photos_keep_their_tones(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgb = np.asarray(load_image(tmp_path / "grey16.png")).astype(int)
    assert rgb.shape == (32, 32, 3)
    assert abs(rgb[..., 0] - ramp.astype(float) / 257).max() <= 1  # not clipped to white
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert np.asarray(load_image(_saved(transparent, tmp_path / "a.png"))).min() == 255


def _saved(image, path):
    image.save(path)
    return path


# --- 4. config files -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train_batch_size: two\n", "setting train_batch_size = 'two'"),
        ("rank: 2.5\n", "setting rank = 2.5"),
        ("lora_target_override: attn1.to_q\n", "setting lora_target_override"),
        ("learning_rat: 0.1\n", "did you mean 'learning_rate'"),
        (b"max_train_steps: 2\n# caf\xe9\n", "not UTF-8"),
    ],
)
def test_config_files_with_wrong_types_are_refused(trained, tmp_path, capsys, text, message):
    config = tmp_path / "settings.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(train_args(trained / "photos", tmp_path / "out", "--config", config), capsys, message)
    assert not (tmp_path / "out" / "subject.safetensors").exists()


def test_a_number_yaml_reads_as_text_is_a_number(trained, tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("learning_rate: 1e-4\n")  # PyYAML reads this as a string
    assert main(train_args(trained / "photos", tmp_path / "out", "--config", config)) == 0
    saved = json.loads((tmp_path / "out" / "train_config.json").read_text())
    assert saved["learning_rate"] == 1e-4


# --- 5. values out of range ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--learning-rate", "-1"], "--learning-rate must be more than 0"),
        (["--learning-rate", "nan"], "--learning-rate must be a number"),
        (["--lr-scheduler", "bogus"], "--lr-scheduler must be"),
        (["--prior-loss-weight", "1", "--class-prompt", "a dog", "--num-class-images", "0"],
         "--num-class-images 1 or more"),
        (["--adam-beta1", "1.5"], "--adam-beta1 must be below 1"),
        (["--lora-targets", "spatial-everything"], "--lora-targets must be"),
    ],
)  # fmt: skip
def test_training_values_out_of_range_are_refused(trained, tmp_path, capsys, extra, message):
    refused(train_args(trained / "photos", tmp_path / "out", *extra), capsys, message)
    assert not (tmp_path / "out" / "subject.safetensors").exists()


# --- 6. damaged checkpoints ----------------------------------------------------------------------
def _damage(checkpoint, how):
    if how == "truncated optimizer":
        data = (checkpoint / "optimizer.pt").read_bytes()
        (checkpoint / "optimizer.pt").write_bytes(data[: len(data) // 2])
    elif how == "bad state":
        (checkpoint / "state.json").write_text("{not json")
    elif how == "wrong type":
        (checkpoint / "state.json").write_text("[1, 2]")
    elif how == "garbage subject":
        (checkpoint / "subject.safetensors").write_bytes(b"garbage" * 10)
    elif how == "missing file":
        (checkpoint / "scheduler.pt").unlink()


DAMAGES = ["truncated optimizer", "bad state", "wrong type", "garbage subject", "missing file"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_checkpoint_is_named_and_latest_falls_back(
    trained, tmp_path, capsys, caplog, how
):
    import shutil

    out = tmp_path / "subject"
    shutil.copytree(trained / "subject", out)
    (out / "subject.safetensors").unlink()  # a run cut short after two checkpoints
    newest = out / "checkpoints" / "checkpoint-2"
    _damage(newest, how)
    argv = train_args(trained / "photos", out, "--resume-from-checkpoint")
    refused([*argv, str(newest)], capsys, "checkpoint-2 is damaged")
    assert main([*argv, "latest"]) == 0  # resumes from checkpoint-1, and says so
    assert "checkpoint-2 is damaged" in caplog.text
    assert (out / "subject.safetensors").is_file()


def test_a_full_disk_leaves_no_partial_checkpoint(trained, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("customcrafter.training.checkpoint.torch.save", full)
    out = tmp_path / "out"
    refused(train_args(trained / "photos", out), capsys, "No space left on device")
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


# --- 7. outputs and inputs -----------------------------------------------------------------------
def test_an_output_folder_that_is_a_file_is_refused(trained, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine")
    refused(train_args(trained / "photos", target), capsys, "is a file, not a folder")
    assert target.read_text() == "mine"


def test_generate_checks_its_output_can_be_written_before_sampling(
    trained, tmp_path, capsys, monkeypatch
):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    monkeypatch.setattr("customcrafter.sampling.CustomCrafterPipeline.from_pretrained", pytest.fail)
    argv = ["-q", "generate", "--subject", str(trained / "subject"), "--prompt", "a <new1> dog"]
    refused([*argv, "--out", str(blocker / "video.mp4")], capsys, "is a file, not a folder")


@pytest.mark.parametrize("kind", ["not a video", "png"])
def test_eval_refuses_what_is_not_a_video(tmp_path, capsys, kind):
    if kind == "png":
        path = tmp_path / "frame.png"
        Image.new("RGB", (16, 16)).save(path)
    else:
        path = tmp_path / "notes.mp4"
        path.write_text("these are notes")
    refused(["eval", "--video", str(path)], capsys, str(path))


def test_eval_with_nothing_to_compute_is_refused(tmp_path, capsys):
    write_video(tmp_path / "one.mp4", np.zeros((1, 16, 16, 3), np.uint8))
    refused(["eval", "--video", str(tmp_path / "one.mp4")], capsys, "no metric applies")


# --- 8. subject files and checkpoints to convert -------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda meta, t: ("{not json", t), "damaged metadata"),
        (lambda meta, t: (json.dumps({**meta, "colour": 1}), t), "unknown fields ['colour']"),
        (lambda meta, t: (json.dumps({k: v for k, v in meta.items() if k != "rank"}), t),
         "missing ['rank']"),
        (lambda meta, t: (json.dumps({**meta, "tokens": [], "initializer_words": {}}), t),
         "names no subject tokens"),
        (lambda meta, t: (json.dumps({**meta, "rank": "four"}), t), "setting rank = 'four'"),
        (lambda meta, t: (json.dumps(meta), {k: v for k, v in t.items() if "token" not in k}),
         "no embedding for each of its tokens"),
    ],
)  # fmt: skip
def test_damaged_subject_files_are_refused(trained, tmp_path, capsys, change, message):
    source = trained / "subject" / "subject.safetensors"
    meta = json.loads(file_metadata(source)["customcrafter"])
    meta, tensors = change(meta, load_file(source))
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"customcrafter": meta})
    argv = ["-q", "generate", "--subject", str(tmp_path / "bad.safetensors"), "--prompt", "a dog"]
    refused([*argv, "--out", str(tmp_path / "v.mp4")], capsys, message)


def test_converting_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "model.ckpt")
    argv = ["convert", "videocrafter2", str(tmp_path / "model.ckpt"), str(tmp_path / "out")]
    refused(argv, capsys, "not a state dict")
    assert not (tmp_path / "out").exists()


# --- 9. smaller things ---------------------------------------------------------------------------
def test_a_prompt_without_the_subject_token_is_warned_about(trained, tmp_path, caplog):
    argv = ["-q", "generate", "--subject", str(trained / "subject"), "--prompt", "a dog"]
    assert main([*argv, "--steps", "6", "--out", str(tmp_path / "v.mp4")]) == 0
    assert "does not use the subject's token (<new1>)" in caplog.text


def test_results_get_the_usual_file_permissions(trained):
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    for name in ("subject.safetensors", "train_config.json"):
        assert (trained / "subject" / name).stat().st_mode & 0o777 == expected, name


def test_generate_prints_no_library_warnings(trained, tmp_path, capfd):
    argv = ["-q", "generate", "--subject", str(trained / "subject"), "--prompt", "a <new1> dog"]
    assert main([*argv, "--steps", "6", "--out", str(tmp_path / "v.mp4")]) == 0
    assert "should be kept in float32" not in capfd.readouterr().err


def test_exit_codes_are_documented_and_a_bug_says_so(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "130" in capsys.readouterr().out

    def bug(args):
        raise RuntimeError("something we did not foresee")

    monkeypatch.setattr("customcrafter.cli.demo.run", bug)
    from customcrafter.cli import build_parser

    assert build_parser().parse_args(["demo"]).run is bug
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "a bug in CustomCrafter" in err
