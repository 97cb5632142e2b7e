"""Samples while training (``--validation-prompt``): written where and when they are due,
the base model's before the first step, and the subject file the same as without them."""

import torch
from PIL import Image
from safetensors.torch import load_file
from test_training import _config

from customcrafter.cli import main
from customcrafter.training import train


def _trained(tmp_path, instance_dir, class_dir, name, **overrides):
    config = _config(tmp_path, instance_dir, class_dir, name, max_train_steps=3,
                     checkpointing_steps=3, **overrides)  # fmt: skip
    return train(config, progress=False)


def test_samples_are_written_when_due_and_change_nothing_of_the_training(
    tmp_path, instance_dir, class_dir
):
    plain = load_file(_trained(tmp_path, instance_dir, class_dir, "plain"))
    prompts = ["a <new1> dog running on the beach", "a <new1> dog, swimming"]
    path = _trained(
        tmp_path, instance_dir, class_dir, "watched", validation_prompts=prompts,
        validation_steps=2, validation_inference_steps=3, validation_num_frames=2,
    )  # fmt: skip
    watched = load_file(path)
    assert watched.keys() == plain.keys()
    assert all(torch.equal(watched[k], plain[k]) for k in plain)
    samples = path.parent / "samples"
    steps = sorted(p.name for p in samples.iterdir())
    assert steps == ["step-000000", "step-000002", "step-000003"]  # before, every 2, the end
    for step in steps:
        files = sorted(p.name for p in (samples / step).iterdir())
        assert files == [
            "00-a-new1-dog-running-on-the-beach.mp4" if step != "step-000000" else
            "00-a-dog-running-on-the-beach.mp4",
            "01-a-new1-dog-swimming.mp4" if step != "step-000000" else "01-a-dog-swimming.mp4",
            "contact_sheet.png",
        ]  # fmt: skip
        with Image.open(samples / step / "contact_sheet.png") as sheet:
            assert sheet.size[1] > 0
    # the same seeds every round: the untrained module (B = 0) at step 0 is the base model,
    # and later rounds differ from it
    first = (samples / "step-000002" / "contact_sheet.png").read_bytes()
    assert first != (samples / "step-000000" / "contact_sheet.png").read_bytes()


def test_the_flags_take_prompts_with_commas_and_refuse_nonsense(tmp_path, instance_dir, capsys):
    argv = ["-q", "train", "--base", "tiny", "--instance-data-dir", str(instance_dir),
            "--instance-prompt", "a <new1> dog", "--prior-loss-weight", "0", "--output-dir",
            str(tmp_path / "run"), "--max-train-steps", "1", "--train-frames", "2",
            "--validation-prompt", "a <new1> dog, running", "--validation-prompt",
            "a <new1> dog", "--validation-inference-steps", "2", "--validation-num-frames",
            "2"]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "run" / "samples" / "step-000001").iterdir())
    assert names == ["00-a-new1-dog-running.mp4", "01-a-new1-dog.mp4", "contact_sheet.png"]
    bad = [*argv[:-2], "--validation-inference-steps", "1", "--overwrite"]
    assert main(bad) == 2
    assert "--validation-inference-steps" in capsys.readouterr().err


def test_a_run_logs_its_losses_and_samples_to_tensorboard(tmp_path, instance_dir, class_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = _trained(
        tmp_path, instance_dir, class_dir, "logged", report_to="tensorboard",
        validation_prompts=["a <new1> dog"], validation_steps=3, validation_inference_steps=2,
        validation_num_frames=2,
    )  # fmt: skip
    events = list((path.parent / "logs").rglob("events.out.tfevents.*"))
    assert events
    log = EventAccumulator(str(events[0].parent), size_guidance={"images": 0}).Reload()
    tags = log.Tags()
    assert {"loss", "prior", "lr", "grad_norm", "step_seconds"} <= set(tags["scalars"])
    assert [e.step for e in log.Scalars("loss")] == [1, 2, 3]
    assert {"samples/0", "samples/contact_sheet"} <= set(tags["images"])
    assert sorted(e.step for e in log.Images("samples/contact_sheet")) == [0, 3]
    videos = log.Images("samples/0")
    assert sorted(e.step for e in videos) == [0, 3]
    assert all(e.encoded_image_string.startswith(b"GIF8") for e in videos)  # animated


def test_report_to_names_what_is_missing(tmp_path, instance_dir, class_dir):
    import importlib.util

    import pytest

    from customcrafter.errors import UserError

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    with pytest.raises(UserError, match="pip install wandb"):
        _trained(tmp_path, instance_dir, class_dir, "w", report_to="wandb")


def test_an_overwriting_run_stages_its_samples_and_adds_its_log_beside_the_earlier(
    tmp_path, instance_dir, class_dir
):
    settings = dict(validation_prompts=["a <new1> dog"], validation_inference_steps=2,
                    validation_num_frames=2, report_to="tensorboard")  # fmt: skip
    first = _trained(tmp_path, instance_dir, class_dir, "run", validation_steps=3, **settings)
    out = first.parent
    earlier = {p.name for p in (out / "logs").rglob("events.*")}
    again = _trained(tmp_path, instance_dir, class_dir, "run", overwrite=True,
                     validation_steps=1, **settings)  # fmt: skip
    assert again == first and not (out / ".run").exists()
    steps = sorted(p.name for p in (out / "samples").iterdir())
    assert steps == ["step-000000", "step-000001", "step-000002", "step-000003"]  # the new run's
    runs = {p.relative_to(out / "logs").parts[0] for p in (out / "logs").rglob("events.*")}
    assert len(runs) == 2 and earlier <= {p.name for p in (out / "logs").rglob("events.*")}
