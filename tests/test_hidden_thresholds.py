"""The warning that a threshold set from Home Assistant hides the config's (``run`` and ``check-config``): only for
values that differ, in words that show how (found by a review)."""

from __future__ import annotations

from noisewatch.config import Config
from noisewatch.daemon.setup import hidden_thresholds


def test_a_home_assistant_threshold_equal_to_the_config_s_but_for_float_rounding_hides_nothing() -> None:
    """``hidden_thresholds`` (said by ``run`` at start and reload, and now by ``check-config``) compares the config's
    threshold with the one set from Home Assistant exactly, then prints both with ``:g``. A value from a slider that
    differs only in the last bits (7 x 0.05 = 0.35000000000000003 and 57 x 0.01 = 0.5700000000000001, as a slider's
    step sum gives them; parse_threshold keeps them as sent) is reported as hiding the config's, with both numbers
    printed the same: "detector.thresholds.siren = 0.35 is not in force: 0.35, set from Home Assistant, wins".
    The detector behaves identically with either value; the warning tells the user to act on nothing."""
    config = Config.model_validate({"detector": {"thresholds": {"siren": 0.35, "dog_bark": 0.57}}})
    warnings = hidden_thresholds(config, {"siren": 7 * 0.05, "dog_bark": 57 * 0.01})
    assert warnings == [], warnings


def test_a_hidden_threshold_warning_names_two_different_values() -> None:
    """Whatever is said must be readable: the two numbers of a hidden-threshold warning differ as printed."""
    config = Config.model_validate({"detector": {"thresholds": {"siren": 0.1234567}}})
    for warning in hidden_thresholds(config, {"siren": 0.1234568}):
        configured, in_force = warning.split(" = ", 1)[1].split(" is not in force: ", 1)
        assert configured != in_force.split(",", 1)[0], warning
