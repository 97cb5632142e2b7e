"""Dynamic Weighted Video Sampling follows the paper's Algorithm 1."""

import pytest

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
