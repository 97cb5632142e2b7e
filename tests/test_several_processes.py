"""Training on several processes (``accelerate launch``, DDP over gloo on the CPU) is training
on one: two processes learn what one process with twice the gradient accumulation learns,
generate the class images once between them, and a killed two-process run goes on from its
last checkpoint on one process."""

import time

import pytest
import torch
from conftest import kill_tree, launch, write_images
from safetensors.torch import load_file

from customcrafter.cli import main
from customcrafter.training.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow


def run(args: list[str], processes: int = 2) -> str:
    process = launch(args, processes)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-4000:]
    return err


def train_args(tmp_path, base: str, out: str, steps: int, accumulation: int) -> list[str]:
    photos = tmp_path / "photos"
    if not photos.exists():
        write_images(photos)
    return ["train", "--base", base, "--instance-data-dir", str(photos), "--instance-prompt",
            "video of a <new1> dog", "--class-prompt", "video of a dog", "--num-class-images",
            "4", "--class-sampling-steps", "2", "--output-dir", str(tmp_path / out),
            "--max-train-steps", str(steps), "--checkpointing-steps", "2", "--train-frames",
            "2" if base == "tiny" else "1", "--learning-rate", "1e-2", "--lr-scheduler", "linear", "--augment",
            "--gradient-accumulation-steps", str(accumulation)]  # fmt: skip


def here(args: list[str]) -> int:
    """``customcrafter ARGS`` in this process on one thread, as each launched process runs:
    sums split over other thread counts round differently, and Adam turns the rounding of a
    near-zero gradient into a visible step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["-q", *args])
    finally:
        torch.set_num_threads(threads)


def assert_same_subject(a, b, atol=1e-6):
    a, b = load_file(str(a)), load_file(str(b))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=atol), (
            key,
            float((a[key] - b[key]).abs().max()),
        )


@pytest.mark.parametrize("base", ["tiny", "tiny-wan", "tiny-wan-a14b"])
def test_two_processes_learn_what_one_learns_with_twice_the_accumulation(tmp_path, base):
    assert here(train_args(tmp_path, base, "one", 3, accumulation=2)) == 0
    # (the class images the first run cached are the ones the second trains on)
    run(["-q", *train_args(tmp_path, base, "two", 3, accumulation=1)])
    assert_same_subject(tmp_path / "one/subject.safetensors", tmp_path / "two/subject.safetensors")
    # the main process alone wrote the checkpoints
    names = sorted(p.name for p in (tmp_path / "two/checkpoints").iterdir())
    assert names == ["checkpoint-2", "checkpoint-3"], names


def test_class_images_are_generated_once_split_across_the_processes(tmp_path, monkeypatch):
    cache = tmp_path / "own-cache"
    monkeypatch.setenv("CUSTOMCRAFTER_CACHE", str(cache))
    err = run(train_args(tmp_path, "tiny", "two", 1, accumulation=1))
    made = sorted(cache.rglob("*.png"))
    assert [p.name for p in made] == [f"{i:05d}.png" for i in range(4)]
    # the main process's bar counts its own share: two of the four
    assert "class images: 100%" in err and "2/2" in err, err[-2000:]
    assert "4/4" not in err
    # each image is the one a single process makes from its seed
    monkeypatch.setenv("CUSTOMCRAFTER_CACHE", str(tmp_path / "single"))
    assert main(["-q", *train_args(tmp_path, "tiny", "one", 1, accumulation=1)]) == 0
    single = sorted((tmp_path / "single").rglob("*.png"))
    assert [p.read_bytes() for p in single] == [p.read_bytes() for p in made]


def test_a_killed_two_process_run_goes_on_from_its_checkpoint_on_one_process(tmp_path, capsys):
    # (constant: how long the killed run meant to go on must not matter)
    constant = ["--lr-scheduler", "constant"]
    args = train_args(tmp_path, "tiny", "run", 10_000, accumulation=1) + constant
    process = launch(["-q", *args])
    deadline = time.monotonic() + 300
    while not list_checkpoints(tmp_path / "run") and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    kill_tree(process.pid)  # the launcher and both workers, mid-step
    process.communicate()
    step = int(list_checkpoints(tmp_path / "run")[-1].name.split("-")[1])
    assert step >= 2

    # one process with the same accumulation would average half the micro-batches: refused
    resume = ["--resume-from-checkpoint", "latest", *constant]
    one_process = train_args(tmp_path, "tiny", "run", step + 2, accumulation=1) + resume
    assert here(one_process) == 2
    assert "--gradient-accumulation-steps 2" in capsys.readouterr().err
    # with twice the accumulation it goes on, and ends where a straight run ends
    resumed = train_args(tmp_path, "tiny", "run", step + 2, accumulation=2) + resume
    assert here(resumed) == 0
    assert here(train_args(tmp_path, "tiny", "straight", step + 2, accumulation=2) + constant) == 0
    assert_same_subject(
        tmp_path / "run/subject.safetensors", tmp_path / "straight/subject.safetensors"
    )


# --- one video over several GPUs ---------------------------------------------------------------
def test_context_parallel_checks_the_split_before_anything_runs():
    from customcrafter.errors import UserError
    from customcrafter.models import build_tiny_t2v
    from customcrafter.models.wan import build_tiny_wan

    wan = build_tiny_wan()  # 2 heads, patches 1x2x2
    shape = wan.latent_shape(1, 5, 32, 32)  # 2 x 4 x 4 latents: 2 x 2 x 2 = 8 tokens
    with pytest.raises(UserError, match="8 tokens over 3 processes"):
        wan.enable_context_parallel("ring", 3, shape)
    with pytest.raises(UserError, match="2 attention heads"):
        wan.enable_context_parallel("ulysses", 4, shape)
    with pytest.raises(UserError, match="context-parallel plan"):
        build_tiny_t2v().enable_context_parallel("ring", 2, (1, 4, 2, 8, 8))


def test_context_parallel_is_refused_where_it_cannot_run(tmp_path, capsys):
    args = ["generate", "--base", "tiny-wan", "--no-subject", "--prompt", "a dog", "--out",
            str(tmp_path / "v.mp4"), "--steps", "2", "--context-parallel", "ulysses"]  # fmt: skip
    assert main(["-q", *args]) == 2
    assert "accelerate launch --multi_gpu --num_processes N" in capsys.readouterr().err
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog\n")
    many = ["generate", "--base", "tiny-wan", "--no-subject", "--prompts", str(prompts),
            "--output-dir", str(tmp_path / "many"), "--context-parallel", "ring"]  # fmt: skip
    assert main(["-q", *many]) == 2
    assert "choose one" in capsys.readouterr().err
    # two CPU processes: diffusers places each on a GPU
    process = launch(["-q", *args])
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0 and "runs on GPUs only" in err, err[-2000:]
    assert not (tmp_path / "v.mp4").exists()


# --- the weights sharded (--fsdp) --------------------------------------------------------------
@pytest.mark.parametrize("base", ["tiny", "tiny-wan"])
def test_sharded_weights_learn_what_one_process_learns_and_go_on_without_sharding(tmp_path, base):
    samples = ["--validation-prompt", "a <new1> dog", "--validation-steps", "2",
               "--validation-inference-steps", "2"]  # fmt: skip
    # a gathered weight lies in other memory than a whole one, so sums round otherwise;
    # Wan's self-attention query and key get near-zero gradients on this tiny model, which
    # Adam's default epsilon would turn from rounding into steps: a larger one keeps the
    # comparison to what the runs learn
    epsilon = ["--adam-epsilon", "1e-4"]
    run(["-q", *train_args(tmp_path, base, "two", 3, 1), "--fsdp", *samples, *epsilon])
    assert here(train_args(tmp_path, base, "one", 3, accumulation=2) + epsilon) == 0
    assert_same_subject(
        tmp_path / "one/subject.safetensors", tmp_path / "two/subject.safetensors", atol=1e-5
    )
    # every process sampled (each gathers the shards the others hold), the main one wrote
    assert sorted(p.name for p in (tmp_path / "two/samples").iterdir()) == [
        "step-000000", "step-000002", "step-000003"
    ]  # fmt: skip
    # its checkpoints hold whole tensors: one process goes on from them, unsharded
    resume = ["--resume-from-checkpoint", "latest", *epsilon]
    assert here(train_args(tmp_path, base, "two", 5, accumulation=2) + resume) == 0
    assert here(train_args(tmp_path, base, "one", 5, accumulation=2) + resume) == 0
    assert_same_subject(
        tmp_path / "one/subject.safetensors", tmp_path / "two/subject.safetensors", atol=1e-5
    )


def test_sharding_a_two_expert_model_asks_for_one_expert(tmp_path):
    process = launch(["-q", *train_args(tmp_path, "tiny-wan-a14b", "two", 1, 1), "--fsdp"])
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0 and "add --experts high or --experts low" in err, err[-2000:]
