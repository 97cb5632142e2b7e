"""Dynamic Weighted Video Sampling follows the paper's Algorithm 1, and its settings are
declared once."""

import argparse
from dataclasses import dataclass, fields

import pytest
from pydantic import ValidationError

from customcrafter.app.jobs import schedule_controls
from customcrafter.benchmark.schema import BandSettings, DwvsSettings, settings_section
from customcrafter.cli.args import add_config_arguments
from customcrafter.config import setting
from customcrafter.errors import UserError
from customcrafter.sampling import DynamicWeightSchedule


def test_paper_defaults_run_five_steps_low_then_forty_five_high():
    schedule = DynamicWeightSchedule()
    assert (schedule.lambda_s, schedule.lambda_l, schedule.k) == (0.4, 0.8, 5)
    assert schedule.weights(50) == [0.4] * 5 + [0.8] * 45


def test_constant_and_off_are_the_same_object_with_other_values():
    assert DynamicWeightSchedule.constant(1.0).weights(4) == [1.0] * 4
    off = DynamicWeightSchedule.off()
    assert isinstance(off, DynamicWeightSchedule) and off.is_off
    assert off.weights(3) == [0.0] * 3


def test_k_beyond_the_step_count_keeps_the_low_weight_throughout():
    assert DynamicWeightSchedule(0.2, 0.9, 10).weights(4) == [0.2] * 4


def test_negative_k_is_refused():
    with pytest.raises(UserError):
        DynamicWeightSchedule(0.4, 0.8, -1)


# --- one declaration: every surface is made from the schedule's fields -------------------------


@dataclass(frozen=True)
class _WithJitter(DynamicWeightSchedule):
    """A schedule with one more option, declared as the real ones are: one field."""

    jitter: float = setting(0.0, help="a made-up option", minimum=0.0, maximum=1.0, slider_step=0.1)


def test_a_new_schedule_option_reaches_the_command_line_the_spec_and_the_app():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _WithJitter)
    assert parser.parse_args(["--jitter", "0.5"]).jitter == 0.5
    assert "a made-up option" in parser.format_help()

    section = settings_section(_WithJitter)
    assert section.model_validate({"jitter": 0.5}).jitter == 0.5
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        section.model_validate({"jitter": 2})

    jitter = {c.name: c for c in schedule_controls(_WithJitter)}["jitter"]
    assert (jitter.kind, jitter.minimum, jitter.maximum, jitter.step) == ("slider", 0.0, 1.0, 0.1)
    with pytest.raises(UserError, match="jitter must be between 0 and 1, got 3"):
        _WithJitter(jitter=3.0)


def test_the_papers_settings_make_the_flags_the_spec_section_and_the_sliders():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DynamicWeightSchedule)
    args = parser.parse_args([])
    assert (args.lambda_s, args.lambda_l, args.k, args.switch_sigma) == (0.4, 0.8, 5, None)
    assert list(DwvsSettings.model_fields) == [f.name for f in fields(DynamicWeightSchedule)]
    assert list(BandSettings.model_fields) == ["start", "stop", "weight"]
    sliders = {c.name: c for c in schedule_controls() if c.kind == "slider"}
    assert {n: (c.minimum, c.maximum) for n, c in sliders.items()} == {
        "lambda_s": (0.0, 2.0),
        "lambda_l": (0.0, 2.0),
        "k": (0, 100),
    }
    others = [c.name for c in schedule_controls() if not c.paper]
    assert others == ["switch_sigma", "delay_token", "cond_only"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lambda_s": -0.1}, "lambda_s must be at least 0 \\(and at most 2\\), got -0.1"),
        ({"lambda_l": 2.5}, "lambda_l must be between 0 and 2, got 2.5"),
        ({"lambda_l": float("inf")}, "lambda_l must be a number"),
        ({"switch_sigma": -1.0}, "switch_sigma must be at least 0"),
        ({"k": -1}, "k must be at least 0"),
    ],
)
def test_every_way_in_checks_the_declared_bounds(values, message):
    with pytest.raises(UserError, match=message):
        DynamicWeightSchedule(**values)
    with pytest.raises(ValidationError):
        DwvsSettings.model_validate(values)
