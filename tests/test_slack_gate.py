"""The signature gate's replay window, on a fixed clock: the HTTP fuzz tests cannot pin the edge."""

import pytest

from bot.slack_gate import MAX_CLOCK_SKEW_SECONDS, SlackGate
from stand_ins.slack_requests import FORM, signed

SECRET = "gate-test-secret"
NOW = 1_800_000_000
BODY = b"command=%2Fargo&text=list"


def gate_at(moment: float) -> SlackGate:
    return SlackGate(SECRET, clock=lambda: moment)


@pytest.mark.parametrize("offset", [-MAX_CLOCK_SKEW_SECONDS, 0, MAX_CLOCK_SKEW_SECONDS])
def test_a_signature_inside_the_window_either_side_of_now_is_accepted(offset: int) -> None:
    headers = signed(SECRET, BODY, content_type=FORM, timestamp=NOW + offset)
    assert gate_at(NOW).verify(BODY, headers)


@pytest.mark.parametrize("offset", [-MAX_CLOCK_SKEW_SECONDS - 1, MAX_CLOCK_SKEW_SECONDS + 1])
def test_a_signature_a_second_outside_the_window_is_refused(offset: int) -> None:
    headers = signed(SECRET, BODY, content_type=FORM, timestamp=NOW + offset)
    assert not gate_at(NOW).verify(BODY, headers)


def test_the_window_is_measured_from_the_clock_with_its_fractions() -> None:
    """A stamp 300 s old on a whole second is 300.5 s old half a second later: refused."""
    headers = signed(SECRET, BODY, content_type=FORM, timestamp=NOW - MAX_CLOCK_SKEW_SECONDS)
    assert gate_at(NOW).verify(BODY, headers)
    assert not gate_at(NOW + 0.5).verify(BODY, headers)


def test_a_signature_made_with_another_secret_is_refused_inside_the_window() -> None:
    headers = signed("another-secret", BODY, content_type=FORM, timestamp=NOW)
    assert not gate_at(NOW).verify(BODY, headers)
