"""Benchmark specs and their runner, end to end on the tiny base model with tiny CLIP and DINO
models saved into folders (nothing is downloaded)."""

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import kill_tree, launch, write_images
from PIL import Image
from safetensors.torch import load_file
from tiny_scorers import tiny_clip, tiny_vit

import customcrafter.training
from customcrafter.benchmark import load_spec, run_benchmark, write_reports
from customcrafter.benchmark.report import t_interval
from customcrafter.benchmark.scoring import METRIC_KEYS
from customcrafter.benchmark.training import train_config
from customcrafter.cli import benchmark as benchmark_command
from customcrafter.cli import eval as eval_command
from customcrafter.errors import UserError
from customcrafter.evaluation import motion_metrics
from customcrafter.io import read_video, write_video
from customcrafter.sampling import CustomCrafterPipeline

SPECS = Path(__file__).parent.parent / "benchmarks" / "specs"
METHODS = ("DWVS", "constant 1.0", "base")
MEASURED = ("clip_t", "clip_i", "dino_i", "t_cons", "dynamic_degree", "flow_magnitude")
SHAPES = ("subject_similarity", "displacement", "background_accuracy", "motion_accuracy")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two CPU threads fighting a busy machine are far slower than one for these tiny models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_scorers(folder: Path) -> tuple[Path, Path]:
    """A random CLIP and a random ViT saved with save_pretrained, as a hub download would be."""
    torch.manual_seed(0)
    model, processor, tokenizer = tiny_clip(layers=1)
    clip = folder / "clip"
    for part in (model, tokenizer, processor):
        part.save_pretrained(clip)
    dino = folder / "dino"
    for part in tiny_vit(layers=1):
        part.save_pretrained(dino)
    return clip, dino


def tiny_spec(**changes) -> dict:
    spec = {
        "name": "tiny",
        "output_dir": "out",
        "data_root": "data",
        "base": "tiny",
        "seeds": [0, 1],
        "generation": {"num_inference_steps": 2, "num_frames": 4, "guidance_scale": 3.0},
        "gif": True,
        "metrics": {"clip": "models/clip", "dino": "models/dino", "motion": True, "shapes": True},
        "subjects": [
            {
                "name": "dog",
                "images": "dog",
                "class_word": "dog",
                "prompts": [
                    "a <new1> dog moving left on a gray background",
                    "a <new1> dog surfing",
                ],
            },
            {
                "name": "cat",
                "images": "cat",
                "class_word": "cat",
                "token": "<new2>",
                "prompts": ["a <new2> cat running", "a <new2> cat on a purple background"],
            },
        ],
        "methods": [
            {
                "name": "DWVS",
                "train": {
                    "max_train_steps": 2,
                    "train_frames": 2,
                    "prior_loss_weight": 0,
                    "class_sampling_steps": 2,
                },
                "schedule": {"dwvs": {"lambda_s": 0.4, "lambda_l": 0.8, "k": 1}},
            },
            {"name": "constant 1.0", "module": "DWVS", "schedule": {"constant": 1.0}},
            {"name": "base", "subject": "none", "schedule": "off"},
        ],
        "published": [
            {
                "source": "Somebody et al., Table 9",
                "rows": {"Other method": {"clip_t": 0.123, "dino_i": 0.456}},
            }
        ],
    }
    spec.update(changes)
    return spec


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Images and tiny scorer models, shared by the tests of this file."""
    root = tmp_path_factory.mktemp("bench")
    write_images(root / "data" / "dog", count=3, seed=0)
    write_images(root / "data" / "cat", count=2, seed=1)
    save_tiny_scorers(root / "models")
    return root


@pytest.fixture(scope="module")
def finished(workspace):
    """One complete run; tests that change it work on a copy."""
    spec_path = write_spec(workspace, tiny_spec())
    out = run_benchmark(load_spec(spec_path), device="cpu", progress=False)
    return spec_path, out


@pytest.fixture
def copy_of_run(finished, tmp_path):
    spec_path, out = finished
    copy = tmp_path / "run"
    shutil.copytree(out, copy)  # copy2: modification times are kept
    return load_spec(spec_path, output_dir=copy), copy


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def mtimes(folder: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob(pattern)}


def forbid_work(monkeypatch):
    """Make training, sampling and loading a scorer fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("this run should not have done that")

    monkeypatch.setattr(CustomCrafterPipeline, "__call__", refuse)
    monkeypatch.setattr("customcrafter.training.train", refuse)
    monkeypatch.setattr("customcrafter.evaluation.metrics.ClipScorer.from_pretrained", refuse)
    monkeypatch.setattr("customcrafter.evaluation.metrics.DinoScorer.from_pretrained", refuse)


def parse(add_parser, argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


# --- a full run --------------------------------------------------------------------------------
def test_a_run_writes_every_video_module_and_report(finished):
    spec_path, out = finished
    spec = load_spec(spec_path)
    jobs = spec.jobs()
    assert len(jobs) == 3 * 2 * 2 * 2  # methods x subjects x prompts x seeds
    for job in jobs:
        assert (out / job.path).is_file() and (out / job.path).with_suffix(".gif").is_file()
    # one module per subject for the training method; the constant-weight variant shares it
    for subject in ("dog", "cat"):
        assert (out / "subjects" / "dwvs" / subject / "subject.safetensors").is_file()
    assert not (out / "subjects" / "constant-1-0").exists()
    assert sorted(json.loads((out / "last_run.json").read_text())["trained"]) == [
        "dwvs/cat",
        "dwvs/dog",
    ]

    rows = read_csv(out / "per_video.csv")
    assert len(rows) == len(jobs)
    assert {(r["method"], r["subject"], r["prompt_index"], r["seed"]) for r in rows} == {
        (j.method, j.subject, str(j.prompt_index), str(j.seed)) for j in jobs
    }
    for row in rows:
        assert (out / row["path"]).is_file()
        for key in (*MEASURED, "subject_similarity", "displacement"):
            assert row[key] != "", (key, row)
            float(row[key])
        if row["method"] == "base":
            assert "<" not in row["sampled_prompt"]  # the base model sees the class word only
        else:
            assert row["sampled_prompt"] == row["prompt"]
    # the shapes detectors score motion / background only where the prompt names one
    by_prompt = {r["prompt"]: r for r in rows}
    assert by_prompt["a <new1> dog moving left on a gray background"]["motion_accuracy"] != ""
    assert by_prompt["a <new1> dog surfing"]["motion_accuracy"] == ""
    assert by_prompt["a <new2> cat on a purple background"]["background_accuracy"] != ""
    assert by_prompt["a <new2> cat running"]["background_accuracy"] == ""

    summary = read_csv(out / "summary.csv")
    for method in METHODS:
        mine = {r["metric"]: r for r in summary if r["method"] == method}
        assert set(MEASURED) <= set(mine)
        for key in MEASURED:
            row = mine[key]
            assert row["n"] == "8" and row["interval"] == "student-t 95%"
            assert float(row["ci95_low"]) <= float(row["mean"]) <= float(row["ci95_high"])
            values = [float(r[key]) for r in rows if r["method"] == method]
            assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-5)

    text = (out / "summary.md").read_text()
    assert "Student-t" in text and "95%" in text
    assert all(f"| {method} |" in text for method in METHODS)

    charts = sorted((out / "charts").glob("*.png"))
    assert {p.stem for p in charts} == set(MEASURED) | set(SHAPES)
    for chart in charts:
        with Image.open(chart) as image:
            image.load()
            assert image.size[0] >= 500 and image.size[1] >= 400

    page = (out / "index.html").read_text()
    for job in jobs:
        assert f'<video src="{job.path}"' in page
        assert f'src="{Path(job.path).with_suffix(".gif").as_posix()}"' in page
    assert "/tmp" not in page and str(out) not in page  # links are relative


def test_a_second_run_does_nothing(copy_of_run, monkeypatch):
    spec, out = copy_of_run
    before = mtimes(out, "*.mp4") | mtimes(out, "*.gif") | mtimes(out, "*.safetensors")
    before |= mtimes(out, "settings.json")
    cache_before = (out / "cache" / "metrics.jsonl").read_text()
    forbid_work(monkeypatch)
    run_benchmark(spec, device="cpu", progress=False)
    after = mtimes(out, "*.mp4") | mtimes(out, "*.gif") | mtimes(out, "*.safetensors")
    after |= mtimes(out, "settings.json")
    assert after == before and len(before) == 24 * 2 + 2 * 2 + 3  # + modules, checkpoints
    assert (out / "cache" / "metrics.jsonl").read_text() == cache_before
    last = json.loads((out / "last_run.json").read_text())
    assert last["trained"] == last["generated"] == last["scored"] == last["gifs"] == []


def test_a_deleted_video_is_the_only_one_made_again(copy_of_run, monkeypatch):
    spec, out = copy_of_run
    victim = "videos/constant-1-0/cat/1-seed0.mp4"
    content = (out / victim).read_bytes()
    (out / victim).unlink()
    (out / victim).with_suffix(".gif").unlink()
    before = mtimes(out, "*.mp4")
    calls = []
    original = CustomCrafterPipeline.__call__

    def counting(self, prompt, **kwargs):
        calls.append((prompt, kwargs["seed"]))
        return original(self, prompt, **kwargs)

    monkeypatch.setattr(CustomCrafterPipeline, "__call__", counting)
    monkeypatch.setattr("customcrafter.training.train", pytest.fail)
    run_benchmark(spec, device="cpu", progress=False)
    assert calls == [("a <new2> cat on a purple background", 0)]
    after = mtimes(out, "*.mp4")
    assert after.pop(victim) and before == after
    last = json.loads((out / "last_run.json").read_text())
    assert last["generated"] == [victim]
    # scores are cached by content: a bit-identical video is not scored again
    assert last["scored"] == ([] if (out / victim).read_bytes() == content else [victim])
    assert len(read_csv(out / "per_video.csv")) == 24


def test_a_replaced_video_is_scored_again_and_a_cut_training_resumes(copy_of_run, monkeypatch):
    spec, out = copy_of_run
    # a video file whose content changed: its cached scores no longer apply
    replaced = "videos/base/dog/0-seed1.mp4"
    frames = np.random.default_rng(5).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    write_video(out / replaced, frames)
    # a training cut short: its checkpoints are there, the finished module is not
    (out / "subjects/dwvs/dog/subject.safetensors").unlink()
    missing = "videos/dwvs/dog/1-seed1.mp4"
    (out / missing).unlink()
    trained = []
    original = customcrafter.training.train

    def recording(config, **kwargs):
        trained.append(config.resume_from_checkpoint)
        return original(config, **kwargs)

    monkeypatch.setattr("customcrafter.training.train", recording)
    run_benchmark(spec, device="cpu", progress=False)
    assert trained == ["latest"]
    assert (out / "subjects/dwvs/dog/subject.safetensors").is_file()
    last = json.loads((out / "last_run.json").read_text())
    assert last["trained"] == ["dwvs/dog"] and last["generated"] == [missing]
    assert replaced in last["scored"]
    row = next(r for r in read_csv(out / "per_video.csv") if r["path"] == replaced)
    frames_read = read_video(out / replaced)
    assert float(row["flow_magnitude"]) == pytest.approx(
        motion_metrics(frames_read).mean_magnitude, abs=1e-5
    )


def test_a_new_method_with_modules_from_elsewhere_adds_only_its_videos(
    finished, workspace, tmp_path, monkeypatch
):
    _, original = finished
    out = tmp_path / "run"
    shutil.copytree(original, out)
    spec = tiny_spec(data_root=str(workspace / "data"), output_dir=str(out))
    spec["metrics"].update(clip=str(workspace / "models/clip"), dino=str(workspace / "models/dino"))
    spec["methods"].append(
        {
            "name": "elsewhere",
            "subject": str(original / "subjects" / "dwvs" / "{subject}"),
            "schedule": {"constant": 0.5},
        }
    )
    monkeypatch.setattr("customcrafter.training.train", pytest.fail)
    run_benchmark(load_spec(write_spec(tmp_path, spec)), device="cpu", progress=False)
    last = json.loads((out / "last_run.json").read_text())
    assert len(last["generated"]) == 8
    assert all(path.startswith("videos/elsewhere/") for path in last["generated"])
    rows = read_csv(out / "per_video.csv")
    assert len(rows) == 4 * 8
    assert all("<new" in r["sampled_prompt"] for r in rows if r["method"] == "elsewhere")
    spec["methods"][-1]["subject"] = str(tmp_path / "nothing" / "{subject}")
    with pytest.raises(UserError, match="no subject module for 'dog'"):
        load_spec(write_spec(tmp_path, spec))


def test_reports_only_rewrites_the_reports_from_the_cache(finished, copy_of_run, monkeypatch):
    spec_path, original = finished
    _, out = copy_of_run
    for name in ("per_video.csv", "summary.csv", "summary.md", "index.html"):
        (out / name).unlink()
    shutil.rmtree(out / "charts")
    forbid_work(monkeypatch)
    args = parse(
        benchmark_command.add_parser,
        ["benchmark", str(spec_path), "--output-dir", str(out), "--reports-only"],
    )
    assert benchmark_command.run(args) == out
    for name in ("per_video.csv", "summary.csv", "summary.md", "index.html"):
        assert (out / name).read_text() == (original / name).read_text(), name
    assert len(list((out / "charts").glob("*.png"))) == len(MEASURED) + len(SHAPES)

    # without the cache, the reports come back from per_video.csv
    shutil.rmtree(out / "cache")
    (out / "summary.csv").unlink()
    write_reports(load_spec(spec_path, output_dir=out))
    assert (out / "summary.csv").read_text() == (original / "summary.csv").read_text()


def test_published_numbers_are_labelled_and_kept_apart(finished):
    _, out = finished
    text = (out / "summary.md").read_text()
    measured, published = text.split("## Published (not measured here)")
    assert "Other method" not in measured and "0.123" not in measured
    assert "Somebody et al., Table 9" in published
    assert "| Other method | 0.123 | 0.456 |" in published
    assert all(f"| {m} |" not in published for m in METHODS)
    assert "Other method" not in (out / "summary.csv").read_text()
    assert "Other method" not in (out / "per_video.csv").read_text()


def test_changed_settings_are_refused_instead_of_mixed(finished, copy_of_run, monkeypatch):
    spec_path, _ = finished
    _, out = copy_of_run
    forbid_work(monkeypatch)
    spec = load_spec(spec_path, output_dir=out, overrides=["generation.num_inference_steps=3"])
    with pytest.raises(UserError, match="other settings.*generation"):
        run_benchmark(spec, device="cpu", progress=False)
    spec = load_spec(spec_path, output_dir=out, overrides=["methods.DWVS.train.rank=8"])
    with pytest.raises(UserError, match="other settings"):
        run_benchmark(spec, device="cpu", progress=False)
    # an edited prompt list would put old videos under new prompts
    spec = load_spec(spec_path, output_dir=out, overrides=["subjects.dog.prompts.1=a <new1> dog"])
    with pytest.raises(UserError, match="was generated for the prompt 'a <new1> dog surfing'"):
        run_benchmark(spec, device="cpu", progress=False)


def test_eval_command_scores_videos_like_the_benchmark(finished, workspace, tmp_path, capsys):
    _, out = finished
    rows = [r for r in read_csv(out / "per_video.csv") if r["subject"] == "dog"][:2]
    report = tmp_path / "scores.json"
    argv = ["eval", "--prompt", rows[0]["prompt"], "--references", str(workspace / "data/dog")]
    argv += ["--clip", str(workspace / "models/clip"), "--dino", str(workspace / "models/dino")]
    argv += ["--json", str(report), "--device", "cpu"]
    for row in rows:
        argv += ["--video", str(out / row["path"])]
    result = eval_command.run(parse(eval_command.add_parser, argv))
    printed = capsys.readouterr().out
    assert "CLIP-T" in printed and "DINO-I" in printed and "mean" in printed
    assert json.loads(report.read_text())["videos"] == result["videos"]
    for row, scores in zip(rows, result["videos"], strict=True):
        assert scores["clip_i"] == pytest.approx(float(row["clip_i"]), abs=1e-5)
        assert scores["dino_i"] == pytest.approx(float(row["dino_i"]), abs=1e-5)
        assert scores["flow_magnitude"] == pytest.approx(float(row["flow_magnitude"]), abs=1e-5)
    assert rows[0]["prompt"] == rows[1]["prompt"]
    assert result["videos"][0]["clip_t"] == pytest.approx(float(rows[0]["clip_t"]), abs=1e-5)


# --- specs -------------------------------------------------------------------------------------
BAD_SPECS = [
    (lambda s: s.update(seed=[0]), r"unknown key 'seed' \(did you mean 'seeds'\?\)"),
    (lambda s: s["subjects"][0].update(images="nowhere"), r"image folder .*nowhere does not exist"),
    (lambda s: s.update(data_root="missing"), "data root .* does not exist"),
    (
        lambda s: s["subjects"][0]["prompts"].append("a dog swimming"),
        "does not use the subject token <new1>",
    ),
    (
        lambda s: s["subjects"][0]["prompts"].append("a <new1> puppy swimming"),
        "does not name the class word 'dog'",
    ),
    (lambda s: s["subjects"][1].update(name="dog"), "the name 'dog' appears twice"),
    (lambda s: s["methods"][2].update(name="DWVS"), "the name 'DWVS' appears twice"),
    (lambda s: s["methods"][2].update(name="dwvs!"), "share the folder name 'dwvs'"),
    (lambda s: s["methods"][1].update(module="DWSV"), "not the name of a method.*'DWVS'"),
    (lambda s: s["methods"][1].update(module="base"), "no subject modules of its own"),
    (lambda s: s["methods"][0].update(schedule={"dvws": 1}), "schedule must be one of"),
    (
        lambda s: s["methods"][1].update(schedule={"band": {"start": 3, "stop": 3}}),
        r"start \(3\) must be below stop \(3\)",
    ),
    (
        lambda s: s["methods"][1].update(schedule={"dwvs": {"switch_sigma": -1}}),
        "switch_sigma",
    ),
    (lambda s: s["methods"][2].update(schedule={"constant": 1.0}), "needs schedule: off"),
    (lambda s: s["methods"][0]["train"].update(max_steps=3), "unknown setting 'max_steps'"),
    (lambda s: s["methods"][0]["train"].update(output_dir="x"), "set by the benchmark runner"),
    (lambda s: s["methods"][0]["train"].update(preset="cooking"), "unknown preset 'cooking'"),
    (lambda s: s["methods"][0].update(subject="none"), "exactly one of 'train'"),
    (lambda s: s["methods"][2].pop("subject"), "exactly one of 'train'"),
    (lambda s: s.update(base="${nope}"), r"\$\{nope\} is not a declared variable"),
    (lambda s: s["metrics"].update(motion="yes"), "metrics.motion must be"),
    (
        lambda s: s["published"][0]["rows"]["Other method"].update(clipt=0.3),
        "unknown metric 'clipt'.*'clip_t'",
    ),
    (lambda s: s.update(seeds=[0, 0]), "seeds has duplicates"),
    (lambda s: s["generation"].update(steps=3), "unknown key 'steps'"),
    (lambda s: s["metrics"].update(clip="./no-such-model"), "model folder .* does not exist"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SPECS)
def test_bad_specs_get_a_clear_error(workspace, tmp_path, change, message):
    spec = tiny_spec(data_root=str(workspace / "data"))
    change(spec)
    with pytest.raises(UserError, match=message):
        load_spec(write_spec(tmp_path, spec))


def test_the_lab_schedules_are_methods_too(workspace, tmp_path):
    spec = tiny_spec(data_root=str(workspace / "data"))
    spec["methods"][1:1] = [
        {"name": "held", "module": "DWVS", "schedule": {"dwvs": {"k": 1, "delay_token": True}}},
        {"name": "sigma", "module": "DWVS", "schedule": {"dwvs": {"switch_sigma": 2.5}}},
        {"name": "band", "module": "DWVS", "schedule": {"band": {"start": 1, "stop": 2}}},
    ]
    methods = {m.name: m for m in load_spec(write_spec(tmp_path, spec)).methods}
    assert methods["held"].schedule.describe() == "DWVS 0.4/0.8, k=1, token held back"
    assert methods["held"].schedule.build().token_steps(2) == [False, True]
    assert methods["sigma"].schedule.describe() == "DWVS 0.4/0.8, sigma=2.5"
    assert methods["sigma"].schedule.build().weights(3, [9.0, 2.5, 1.0]) == [0.4, 0.8, 0.8]
    band = methods["band"].schedule
    assert band.describe() == "1 in steps 1-1 only"
    assert band.build().weights(3) == [0.0, 1.0, 0.0]
    # a plain DWVS method records its settings as before, so earlier runs stay valid
    assert methods["DWVS"].schedule.as_dict() == {
        "kind": "dwvs", "lambda_s": 0.4, "lambda_l": 0.8, "k": 1
    }  # fmt: skip
    assert methods["band"].schedule.as_dict()["band"] == (1, 2)


def test_set_overrides_variables_and_spec_keys(workspace, tmp_path, monkeypatch):
    spec = tiny_spec(data_root=str(workspace / "data"), base="${model}")
    spec["variables"] = {"model": None}
    path = write_spec(tmp_path, spec)
    overrides = ["model=tiny", "generation.num_inference_steps=7", "seeds=[3]"]
    overrides += ["methods.DWVS.train.max_train_steps=5", "methods.2.name=plain"]
    loaded = load_spec(path, overrides=overrides)
    assert {m.base for m in loaded.methods} == {"tiny"}
    assert loaded.generation["num_inference_steps"] == 7 and loaded.seeds == [3]
    assert train_config(loaded, loaded.methods[0], loaded.subjects[0]).max_train_steps == 5
    assert loaded.methods[2].name == "plain"
    monkeypatch.setenv("CUSTOMCRAFTER_MODEL", "from-env")
    assert load_spec(path).methods[0].base == "from-env"
    with pytest.raises(UserError, match="neither a variable of the spec nor a spec key"):
        load_spec(path, overrides=["modle=tiny"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        load_spec(path, overrides=["model"])


def test_toml_specs_read_like_yaml(workspace, tmp_path):
    toml = f"""
name = "tiny"
output_dir = "out"
data_root = "{(workspace / "data").as_posix()}"
base = "tiny"
seeds = [0]

[metrics]
motion = true

[[subjects]]
name = "dog"
images = "dog"
class_word = "dog"
prompts = ["a <new1> dog running"]

[[methods]]
name = "module"
train = {{ max_train_steps = 2 }}
schedule = {{ dwvs = {{ lambda_s = 0.3, lambda_l = 0.9, k = 2 }} }}

[[methods]]
name = "base"
subject = "none"
schedule = "off"
"""
    (tmp_path / "spec.toml").write_text(toml)
    spec = load_spec(tmp_path / "spec.toml")
    assert spec.output_dir == tmp_path / "out"
    assert [(m.name, m.schedule.describe()) for m in spec.methods] == [
        ("module", "DWVS 0.3/0.9, k=2"),
        ("base", "off"),
    ]
    assert spec.metrics.motion is not None and spec.metrics.clip is None


def test_the_paper_spec_loads_with_a_data_root_and_needs_the_checkpoint(tmp_path, monkeypatch):
    raw = yaml.safe_load((SPECS / "paper_table1.yaml").read_text())
    root = tmp_path / "datasets"
    for subject in raw["subjects"]:
        write_images(root / subject["images"], count=1)
    with pytest.raises(UserError, match="--data-root"):
        load_spec(SPECS / "paper_table1.yaml", data_root=tmp_path / "elsewhere")
    monkeypatch.delenv("CUSTOMCRAFTER_VC2_CHECKPOINT", raising=False)
    spec = load_spec(SPECS / "paper_table1.yaml", data_root=root, output_dir=tmp_path / "out")
    assert len(spec.subjects) == 20 and all(len(s.prompts) == 10 for s in spec.subjects)
    assert len({s.images for s in spec.subjects}) == 20
    assert {s.images.parent.name for s in spec.subjects} == {"dreambooth", "customconcept101"}
    assert spec.seeds == [0]
    assert spec.metrics.clip == "openai/clip-vit-base-patch32"
    assert spec.metrics.dino == "facebook/dino-vits16" and spec.metrics.motion is not None
    methods = {m.name: m for m in spec.methods}
    full = methods["CustomCrafter"]
    assert full.schedule.describe() == "DWVS 0.4/0.8, k=5"
    assert train_config(spec, full, spec.subjects[0]).lora_targets == "spatial-qkv"
    assert train_config(spec, full, spec.subjects[0]).max_train_steps == 10_000
    assert methods["module, no DWVS"].owner == "CustomCrafter"
    assert methods["module, no DWVS"].schedule.describe() == "constant 1"
    ablation = methods["without self-attention LoRA, no DWVS"]
    assert train_config(spec, ablation, spec.subjects[0]).lora_targets == "spatial-cross-qkv"
    assert ablation.schedule.describe() == "constant 1"
    assert sum(not m.uses_module for m in spec.methods) == 1
    published = {k: v for g in spec.published for k, v in g.rows.items()}
    assert published["CustomCrafter"] == {
        "clip_t": 0.318,
        "clip_i": 0.786,
        "dino_i": 0.627,
        "t_cons": 0.994,
    }
    assert published["module, no DWVS"]["clip_i"] == 0.790
    assert published["DreamVideo"]["dino_i"] == 0.489
    assert all("Wu et al., AAAI 2025" in g.source for g in spec.published)

    # the checkpoint is only needed to generate: the error names both ways to give it
    with pytest.raises(UserError, match="--set vc2_checkpoint=.*CUSTOMCRAFTER_VC2_CHECKPOINT"):
        run_benchmark(spec, device="cpu", progress=False)
    assert not (tmp_path / "out").exists()
    spec = load_spec(
        SPECS / "paper_table1.yaml", data_root=root, overrides={"vc2_checkpoint": "/ckpt/m.ckpt"}
    )
    assert {m.base for m in spec.methods} == {"videocrafter2:/ckpt/m.ckpt"}
    monkeypatch.setenv("CUSTOMCRAFTER_VC2_CHECKPOINT", "/env/m.ckpt")
    spec = load_spec(SPECS / "paper_table1.yaml", data_root=root)
    assert {m.base for m in spec.methods} == {"videocrafter2:/env/m.ckpt"}


def test_the_shapes_spec_uses_the_bundled_subjects_and_recipe(tmp_path):
    from customcrafter.config import config_to_dict
    from customcrafter.shapes.customize import subject_train_config
    from customcrafter.shapes.world import SUBJECTS, SUBJECTS_DIR, vocabulary

    spec = load_spec(SPECS / "shapes.yaml", output_dir=tmp_path)
    assert spec.data_root.resolve() == SUBJECTS_DIR.resolve()
    assert {s.name: s.class_word for s in spec.subjects} == {
        name: s.class_word for name, s in SUBJECTS.items()
    }
    assert spec.seeds == [0, 1] and all(len(s.prompts) == 4 for s in spec.subjects)
    words = set(vocabulary())
    for subject in spec.subjects:
        for prompt in subject.prompts:
            assert set(prompt.replace(subject.token, "").split()) <= words, prompt
    assert spec.metrics.shapes and spec.metrics.motion is not None
    assert spec.metrics.clip is None and spec.metrics.dino is None
    dwvs, constant, base = spec.methods
    assert constant.owner == dwvs.name and not base.uses_module
    assert {m.base for m in spec.methods} == {"shapes"}
    for subject in spec.subjects:
        ours = config_to_dict(train_config(spec, dwvs, subject))
        recipe = config_to_dict(subject_train_config(subject.name, tmp_path, 300))
        assert ours.pop("output_dir") != recipe.pop("output_dir")
        assert (
            Path(ours.pop("instance_data_dir")).resolve()
            == Path(recipe.pop("instance_data_dir")).resolve()
        )
        assert ours == recipe


# --- statistics --------------------------------------------------------------------------------
def test_t_quantiles_and_intervals():
    # Student-t 97.5% quantiles from the tables, for 1, 2, 4, 10 and 30 degrees of freedom
    for df, value in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)]:
        values = np.arange(df + 1, dtype=float)
        scale = np.std(values, ddof=1) / np.sqrt(df + 1)
        estimate = t_interval(list(values))
        assert estimate.half_width == pytest.approx(value * scale, abs=1e-4 * scale)
        assert estimate.low == pytest.approx(estimate.mean - value * scale, abs=1e-4 * scale)
    estimate = t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.1824 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert estimate.mean == 2.5 and estimate.half_width == pytest.approx(half, abs=1e-3)
    single = t_interval([0.5, None])
    assert single.n == 1 and single.mean == 0.5 and np.isnan(single.low)
    assert set(METRIC_KEYS) >= set(MEASURED) | set(SHAPES)


def test_a_benchmark_runs_on_wan_unchanged(workspace, tmp_path):
    spec = tiny_spec(
        base="tiny-wan",
        output_dir=str(tmp_path / "wan"),
        data_root=str(workspace / "data"),
        seeds=[0],
        generation={"num_inference_steps": 2, "num_frames": 5, "guidance_scale": 3.0},
        metrics={"clip": str(workspace / "models/clip"), "motion": True},
    )
    spec["subjects"] = spec["subjects"][:1]
    spec["methods"][0]["train"]["train_frames"] = 1
    spec["published"] = []
    out = run_benchmark(load_spec(write_spec(tmp_path, spec)), device="cpu", progress=False)
    rows = read_csv(out / "per_video.csv")
    assert {r["method"] for r in rows} == {"DWVS", "constant 1.0", "base"}
    assert all(r["clip_t"] for r in rows)
    assert len(read_video(next((out / "videos").rglob("*.mp4")))) == 5


# --- several processes -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_cut_short_on_two_processes_goes_on_on_one_to_the_same_results(
    finished, workspace, tmp_path
):
    spec_path, out = finished
    two = tmp_path / "two"
    process = launch(["-q", "benchmark", str(spec_path), "--output-dir", str(two),
                      "--device", "cpu"])  # fmt: skip
    while not list((two / "videos").rglob("*.mp4")):  # the modules trained, a first video made
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    kill_tree(process.pid)
    process.communicate()
    # both processes trained a module each, as one process trains it
    for subject in ("dog", "cat"):
        module = Path("subjects/dwvs") / subject / "subject.safetensors"
        a, b = load_file(str(out / module)), load_file(str(two / module))
        assert all(torch.equal(a[k], b[k]) for k in a), subject
    # one process goes on where the two stopped; every file is the one a single run made
    run_benchmark(load_spec(spec_path, output_dir=two), device="cpu", progress=False)
    jobs = load_spec(spec_path).jobs()
    for job in jobs:
        assert np.array_equal(read_video(out / job.path), read_video(two / job.path)), job.path
    rows = {r["path"]: r for r in read_csv(out / "per_video.csv")}
    for row in read_csv(two / "per_video.csv"):
        for key in MEASURED:
            assert float(row[key]) == pytest.approx(float(rows[row["path"]][key]), abs=1e-6)


@pytest.mark.slow
def test_two_processes_split_the_videos(finished, tmp_path):
    spec_path, out = finished
    two = tmp_path / "two"
    process = launch(["-q", "benchmark", str(spec_path), "--output-dir", str(two), "--device",
                      "cpu", "--set", "methods.DWVS.train.max_train_steps=1"])  # fmt: skip
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    stats = json.loads((two / "last_run.json").read_text())
    assert sorted(stats["trained"]) == ["dwvs/cat", "dwvs/dog"]
    assert len(stats["generated"]) == len(set(stats["generated"])) == 24  # none made twice
