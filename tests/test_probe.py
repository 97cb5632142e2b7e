"""The lab's probes and the schedules they need: a switch by noise level, the token held back
until the switch, a band of steps, a prompt switch mid-sampling; the commitment and band
probes on the tiny model and on clips of the shapes world."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from test_pipeline import _observe_contribution, _trained_looking_subject

from customcrafter.errors import UserError
from customcrafter.models.samplers import DDIMSampler
from customcrafter.models.videocrafter2.sampler import VC2DDIMSampler
from customcrafter.models.videocrafter2.schedule import VC2NoiseSchedule
from customcrafter.probe import PromptPair, bands, commitment
from customcrafter.probe.bands import band_edges
from customcrafter.probe.commitment import CurvePoint, crossing, default_grid
from customcrafter.probe.frontier import Method, choose, frontier_videos, summarise
from customcrafter.probe.scoring import FlowScorer, mean_flow, wilson
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.sampling.dwvs import BandSchedule
from customcrafter.shapes.lab import SHAPES, DetectorScorer
from customcrafter.shapes.world import ClipSpec, render_clip
from customcrafter.subject import SpatialSubjectModule

# --- schedules -------------------------------------------------------------------------------


def test_a_switch_by_noise_level_comes_at_the_first_step_at_or_below_it():
    sigmas = [9.0, 5.0, 2.0, 1.0, 0.5]
    schedule = DynamicWeightSchedule(0.2, 0.9, k=0, switch_sigma=2.0)
    assert schedule.weights(5, sigmas) == [0.2, 0.2, 0.9, 0.9, 0.9]
    assert DynamicWeightSchedule(0.2, 0.9, switch_sigma=0.1).weights(5, sigmas) == [0.2] * 5
    assert "while sigma > 2" in schedule.describe()
    with pytest.raises(ValueError, match="noise level of every step"):
        schedule.weights(5)
    with pytest.raises(UserError, match="switch_sigma"):
        DynamicWeightSchedule(switch_sigma=float("nan"))


def test_the_delayed_token_comes_with_the_switch_and_only_when_asked():
    delayed = DynamicWeightSchedule(0.0, 0.8, k=3, delay_token=True)
    assert delayed.token_steps(5) == [False, False, False, True, True]
    assert delayed.weights(5) == [0.0, 0.0, 0.0, 0.8, 0.8]
    assert DynamicWeightSchedule(0.0, 0.8, k=3).token_steps(5) == [True] * 5
    assert delayed.describe().startswith("whole module delayed: class word and weight 0.0 for 3")
    # a delay of the token alone is still a switch, so k is checked against the steps
    with pytest.raises(UserError, match="--k 7"):
        DynamicWeightSchedule(0.8, 0.8, k=7, delay_token=True).check_steps(5)


def test_a_band_runs_the_whole_module_inside_it_and_the_base_model_outside():
    band = BandSchedule(2, 4, weight=0.7)
    assert band.weights(6) == [0.0, 0.0, 0.7, 0.7, 0.0, 0.0]
    assert band.token_steps(6) == [False, False, True, True, False, False]
    assert band.describe() == "module at 0.7 in steps 2-3 only"
    with pytest.raises(UserError, match="ends after the 3 steps"):
        band.check_steps(3)
    with pytest.raises(UserError, match="start < stop"):
        BandSchedule(3, 3)
    assert band_edges(50, 5) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    assert (
        band_edges(7, 3) == [(0, 2), (2, 4), (4, 7)] or sum(b - a for a, b in band_edges(7, 3)) == 7
    )
    with pytest.raises(UserError, match="number of bands"):
        band_edges(4, 5)


def test_noise_levels_fall_and_are_the_noise_to_signal_ratio():
    vc2 = VC2DDIMSampler(VC2NoiseSchedule(use_scale=False))
    vc2.set_timesteps(10)
    sigmas = vc2.noise_levels()
    abar = vc2.schedule.alphas_cumprod[vc2.timesteps].double()
    assert sigmas == pytest.approx(((1 - abar) / abar).sqrt().tolist())
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))
    ddim = DDIMSampler(DDIMScheduler(num_train_timesteps=1000).config)
    ddim.set_timesteps(10)
    abar = ddim.scheduler.alphas_cumprod[ddim.timesteps].double()
    assert ddim.noise_levels() == pytest.approx(((1 - abar) / abar).sqrt().tolist())


# --- the pipeline: prompts and tokens per step ------------------------------------------------


def _videos(pipe, prompt, **kwargs):
    kwargs = {"num_inference_steps": 4, "num_frames": 2, "progress": False, **kwargs}
    return pipe(prompt, **kwargs).videos


def test_a_first_prompt_for_every_step_or_none_is_the_plain_run_of_either(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model)
    a, b = "a red dog running", "a blue cat sitting"
    pure_a, pure_b = _videos(pipe, a), _videos(pipe, b)
    assert not torch.equal(pure_a, pure_b)
    assert torch.equal(_videos(pipe, b, first_prompt=a, first_steps=4), pure_a)
    assert torch.equal(_videos(pipe, b, first_prompt=a, first_steps=0), pure_b)
    mixed = _videos(pipe, b, first_prompt=a, first_steps=2)
    assert not torch.equal(mixed, pure_a) and not torch.equal(mixed, pure_b)
    with pytest.raises(UserError, match="one first prompt per prompt"):
        pipe([a, b], first_prompt=[a], first_steps=1, num_inference_steps=4, progress=False)
    with pytest.raises(UserError, match="first_steps"):
        _videos(pipe, b, first_prompt=a, first_steps=5)


def test_a_delayed_token_samples_the_class_word_until_the_switch(tiny_model):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    # the whole run before the switch: the base model with the class word, exactly
    held = DynamicWeightSchedule(0.0, 0.8, k=4, delay_token=True)
    base = _videos(pipe, "a dog", schedule=DynamicWeightSchedule.off())
    assert torch.equal(_videos(pipe, "a <new1> dog", schedule=held), base)
    # no delay at all: the paper's schedule with the token throughout
    at_once = DynamicWeightSchedule(0.0, 0.8, k=0, delay_token=True)
    constant = _videos(pipe, "a <new1> dog", schedule=DynamicWeightSchedule.constant(0.8))
    assert torch.equal(_videos(pipe, "a <new1> dog", schedule=at_once), constant)
    # in between it differs from both, and from the same LoRA schedule with the token
    half = DynamicWeightSchedule(0.0, 0.8, k=2, delay_token=True)
    token = _videos(pipe, "a <new1> dog", schedule=DynamicWeightSchedule(0.0, 0.8, k=2))
    mixed = _videos(pipe, "a <new1> dog", schedule=half)
    assert not torch.equal(mixed, token) and not torch.equal(mixed, base)


@pytest.mark.parametrize("fold", [True, False])
def test_the_module_in_the_conditional_branch_only(tiny_model, fold):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    handle, seen = _observe_contribution(module, module.metadata.targets[0])
    schedule = DynamicWeightSchedule(0.4, 0.8, k=1, cond_only=True)
    out = pipe("a <new1> dog", schedule=schedule, fold_lora=fold, **STEPS)
    handle.remove()
    # one call for each branch (the hook halves each call's batch of frames): the base
    # weights for the unconditional one
    assert seen == [[w, w] for w in (0.0, 0.4, 0.0, 0.8, 0.0, 0.8)]
    assert out.weights == [0.4, 0.8, 0.8]
    assert schedule.describe().endswith("conditional branch only")


STEPS = {"num_inference_steps": 3, "num_frames": 2, "progress": False}


def test_a_band_outside_the_steps_is_refused_before_sampling(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model, _trained_looking_subject(tiny_model))
    with pytest.raises(UserError, match="ends after the 4 steps"):
        _videos(pipe, "a <new1> dog", schedule=BandSchedule(2, 6))


# --- scoring -----------------------------------------------------------------------------------


def test_wilson_intervals_match_their_closed_form():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.2366, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_crossing_is_interpolated_between_the_grid_points():
    def points(shares):
        return [CurvePoint(j, 0, 0, 0, s, 0, 1) for j, s in shares]

    assert crossing(points([(0, 0.0), (10, 0.25), (20, 0.75), (50, 1.0)])) == 15.0
    assert crossing(points([(0, 0.6), (50, 1.0)])) == 0.0
    assert crossing(points([(0, 0.0), (50, 0.4)])) is None
    assert default_grid(50) == [*range(11), 15, 20, 25, 30, 35, 40, 45, 50]


def _world_clip(motion, color="red", background="gray", seed=0):
    spec = ClipSpec("square", color, motion, background)
    return render_clip(spec, np.random.default_rng(seed))


def test_the_detector_scorer_reads_which_prompt_a_world_clip_follows():
    scorer = DetectorScorer()
    left = "a red square moving left on a gray background"
    right = "a red square moving right on a gray background"
    assert scorer.verdict(_world_clip("moving left"), "motion", left, right) == "first"
    assert scorer.verdict(_world_clip("moving right"), "motion", left, right) == "then"
    assert scorer.verdict(_world_clip("moving up"), "motion", left, right) is None
    blue = left.replace("red", "blue")
    assert scorer.verdict(_world_clip("moving left"), "color", blue, left) == "then"


def test_the_flow_scorer_needs_no_labels():
    right, left = _world_clip("moving right"), _world_clip("moving left")
    assert mean_flow(right)[0] > 0.3 > -0.3 > mean_flow(left)[0]
    scorer = FlowScorer()
    almost_right = _world_clip("moving right", seed=3)
    assert scorer.verdict(almost_right, "motion", "", "", right, left) == "first"
    assert scorer.verdict(almost_right, "motion", "", "", left, right) == "then"
    blue = _world_clip("moving right", color="blue")
    assert scorer.verdict(right, "color", "", "", blue, right) == "then"
    assert scorer.verdict(right, "motion", "", "", left, left) is None


def test_the_shapes_pairs_differ_in_their_attribute_only():
    from customcrafter.shapes.score import wanted

    pairs = SHAPES.lab.prompt_pairs()
    assert {p.attribute for p in pairs} == {"motion", "color", "background"}
    for pair in pairs:
        first, then = wanted(pair.first), wanted(pair.then)
        for attribute in ("motion", "color", "background"):
            same = getattr(first, attribute) == getattr(then, attribute)
            assert same == (attribute != pair.attribute), pair


# --- the probes on the tiny model -------------------------------------------------------------


def test_the_commitment_probe_follows_b_with_no_steps_of_a_and_a_with_all(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model)
    pairs = [
        PromptPair("motion", "a dog running left", "a dog running right"),
        PromptPair("color", "a red dog", "a blue dog"),
    ]
    result = commitment(
        pipe, pairs, switch_steps=[2], samples=2, num_inference_steps=4, num_frames=3,
        progress=False, scorer="flow",
    )  # fmt: skip
    assert result.steps == 4 and len(result.sigmas) == 4
    for attribute in ("motion", "color"):
        curve = result.curves[attribute]
        assert [p.switch_step for p in curve] == [0, 2, 4]
        assert curve[0].share == 0.0 and curve[-1].share == 1.0
        assert all(p.first + p.then + p.neither == 2 for p in curve)
    assert result.suggested_k == int(np.ceil(result.decided["motion"]))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["suggested_k"] == result.suggested_k and data["pairs"][0]["attribute"] == "motion"
    with pytest.raises(UserError, match="between 0 and 4"):
        commitment(pipe, pairs, switch_steps=[9], samples=1, num_inference_steps=4)


def test_the_commitment_probe_refuses_a_subject_module(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model, _trained_looking_subject(tiny_model))
    with pytest.raises(UserError, match="without a subject"):
        commitment(pipe, samples=1)


def test_the_band_probe_runs_each_band_beside_the_base_and_the_full_module(tiny_model):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    references = [np.full((32, 32, 3), 128, np.uint8)]
    result = bands(
        pipe, ["a <new1> dog running"], references, count=2, samples=2, num_inference_steps=6,
        num_frames=3, similarity=lambda clip, refs: float(clip.mean() / 255), progress=False,
    )  # fmt: skip
    labels = [r.label for r in result.rows]
    assert labels == [
        "base (class word)",
        "module at 1, every step",
        "DWVS (paper)",
        "module in steps 0-2 only",
        "module in steps 3-5 only",
    ]
    assert all(r.videos == 2 and r.similarity is not None for r in result.rows)
    # the base row's flow agrees with itself
    assert result.rows[0].flow_agreement == pytest.approx(1.0) or result.rows[0].flow < 1e-6
    assert "| module in steps 3-5 only | 2 |" in result.table()
    with pytest.raises(UserError, match="subject module"):
        bands(CustomCrafterPipeline(tiny_model), ["a dog"])


# --- the command -----------------------------------------------------------------------------


def _cli(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "customcrafter.cli", "-q", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


@pytest.mark.parametrize("base", ["tiny", "tiny-wan"])
def test_probe_commitment_writes_its_curves_chart_and_suggested_k(tmp_path, base):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "- {attribute: motion, first: a dog running left, then: a dog running right}\n"
    )
    out = tmp_path / "probe"
    result = _cli(
        "probe", "commitment", "--base", base, "--pairs", str(pairs), "--grid", "1",
        "--samples", "1", "--steps", "3", "--device", "cpu", "--output-dir", str(out),
        "--eta", "0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "commitment.json").read_text())
    assert [p["switch_step"] for p in data["curves"]["motion"]] == [0, 1, 3]
    assert data["settings"] == {"eta": 0.0} and "3 steps, eta 0," in result.stdout
    assert (out / "commitment.png").stat().st_size > 0 and (out / "commitment.svg").is_file()
    assert "motion:" in result.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("- {attribute: motion, first: a}\n", "exactly the keys attribute, first and then"),
        ("attribute: motion\n", "must be a list"),
        ("- {attribute: motion, first: '', then: b}\n", "three non-empty strings"),
    ],
)
def test_probe_commitment_refuses_bad_pairs_before_loading_anything(tmp_path, text, message):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(text)
    result = _cli(
        "probe", "commitment", "--base", "tiny", "--pairs", str(pairs),
        "--output-dir", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_probe_bands_needs_prompts_off_the_shapes_world(tmp_path):
    model_dir = tmp_path / "subject"
    from customcrafter.models import build_tiny_t2v

    model = build_tiny_t2v()
    SpatialSubjectModule.create(model, {"<new1>": "dog"}).save(model_dir)
    result = _cli(
        "probe", "bands", "--subject", str(model_dir), "--base", "tiny",
        "--output-dir", str(tmp_path / "out"), "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "give --prompt" in result.stderr


# --- the frontier ----------------------------------------------------------------------------


def test_the_frontier_samples_every_method_from_the_same_noises_and_splits_them(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model, _trained_looking_subject(tiny_model))
    methods = [
        Method("base", DynamicWeightSchedule.off()),
        Method("constant 1.0", DynamicWeightSchedule.constant(1.0)),
        Method("paper", DynamicWeightSchedule(k=2), paper=True),
    ]
    references = [np.full((32, 32, 3), 128, np.uint8)]

    def run(done=None):
        return list(
            frontier_videos(
                pipe, ["a <new1> dog running"], methods, references, samples=3, choose=1,
                num_inference_steps=4, num_frames=3, tags={"subject": "dog"}, done=done,
                similarity=lambda clip, refs: float(clip.mean() / 255), progress=False,
            )
        )  # fmt: skip

    records = run()
    assert [(r["method"], r["part"]) for r in records[:3]] == [
        ("base", "choose"),
        ("base", "report"),
        ("base", "report"),
    ]
    assert len(records) == 9 and all(r["subject"] == "dog" for r in records)
    assert [r["prompt"] for r in records[:3]] == ["a <new1> dog running"] * 3
    assert [r["paper"] for r in records[::3]] == [False, False, True]
    # the base model agrees with itself; the others are compared with it
    assert all(r["flow_agreement"] in (None, pytest.approx(1.0)) for r in records[:3])
    assert all("flow_agreement" in r for r in records)
    # resuming: the base model runs again for the comparison, its records are not repeated
    again = run(done={"base", "constant 1.0"}.__contains__)
    assert [r["method"] for r in again] == ["paper"] * 3
    assert again == records[6:]
    assert run(done=lambda name: True) == []
    with pytest.raises(UserError, match="keep some to report"):
        next(frontier_videos(pipe, ["a <new1> dog"], methods, samples=2, choose=2))


def test_the_frontier_summary_has_wilson_and_t_intervals_and_the_rule_keeps_likeness():
    records = [
        {"method": "a", "motion_ok": ok, "similarity": s, "displacement": 2.0}
        for ok, s in [(True, 0.5), (False, 0.7), (True, 0.6), (True, 0.6)]
    ] + [
        {"method": "b", "motion_ok": True, "similarity": 0.4, "displacement": None},
        {"method": "b", "motion_ok": None, "similarity": 0.4},
        {"method": "c", "motion_ok": False, "similarity": 0.62},
        {"method": "c", "motion_ok": True, "similarity": 0.62},
    ]
    points = {p["method"]: p for p in summarise(records, ("method",))}
    a = points["a"]
    assert a["videos"] == 4 and a["motion_ok"] == 0.75
    assert (a["motion_low"], a["motion_high"]) == pytest.approx(wilson(3, 4))
    assert a["similarity"] == pytest.approx(0.6)
    # Student-t with 3 degrees of freedom: 3.182 * sd / sqrt(4)
    half = 3.1824463 * np.std([0.5, 0.7, 0.6, 0.6], ddof=1) / 2
    assert a["similarity_high"] - a["similarity"] == pytest.approx(half, rel=1e-5)
    assert a["displacement_low"] == pytest.approx(2.0)
    assert points["b"]["motion_ok"] == 1.0 and "displacement" not in points["b"]
    # b moves best but loses the likeness; c keeps it (0.62 >= 0.6 - 0.03) and a moves more
    assert choose(list(points.values()), "a")["method"] == "a"
    assert choose(list(points.values()), "a", tolerance=0.25)["method"] == "b"
    assert choose(list(points.values()), "missing") is None


def test_the_frontier_chart_draws_one_curve_per_method_along_the_training(tmp_path):
    from customcrafter.probe.plot import plot_frontier

    records = [
        {"subject": s, "method": m, "training": t, "motion_ok": ok, "similarity": sim}
        for s in ("star", "ring")
        for m in ("constant", "dwvs")
        for t, sim in (("weak", 0.3), ("strong", 0.6))
        for ok in (True, False, m == "dwvs")
    ]
    points = summarise(records, ("subject", "method", "training"))
    written = plot_frontier(points, tmp_path / "f", ["star", "ring"], order=["weak", "strong"])
    assert [p.suffix for p in written] == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in written)


# --- several processes -----------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_make_the_probe_results_one_makes(tmp_path):
    from conftest import launch, learn_tiny_subject

    from customcrafter.cli import main

    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "- {attribute: motion, first: a dog running left, then: a dog running right}\n"
        "- {attribute: color, first: a red dog, then: a blue dog}\n"
    )
    subject = learn_tiny_subject(tmp_path)
    common = ["--samples", "2", "--steps", "4", "--device", "cpu"]
    probes = {
        "commitment": ["probe", "commitment", "--base", "tiny", "--pairs", str(pairs), "--grid",
                       "1,2,3", *common],
        "bands": ["probe", "bands", "--subject", str(subject), "--prompt", "a <new1> dog running",
                  "--bands", "4", *common],
    }  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process runs
    try:
        for argv in probes.values():
            assert main(["-q", *argv, "--output-dir", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    for name, argv in probes.items():
        process = launch([*argv, "--output-dir", str(tmp_path / "two")])
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        # the main process made its share: the two pure runs and two of the three others;
        # of the seven ways of the band probe, four
        runs = {"commitment": "commitment probe: 4it", "bands": "band probe: 4it"}[name]
        assert runs in err.replace("\r", "\n"), err[-2000:]
        one = json.loads((tmp_path / "one" / f"{name}.json").read_text())
        two = json.loads((tmp_path / "two" / f"{name}.json").read_text())
        assert one == two, name
