"""Metrics and intervals on hand-made cases."""

import math

import pytest

from specialize.evaluate.metrics import (
    contains,
    exact_match,
    normalise_answer,
    normalised_match,
    rouge_l,
    token_f1,
)
from specialize.evaluate.stats import bootstrap_mean, mcnemar_exact, paired_difference, wilson


def test_normalisation():
    assert normalise_answer("  The Eiffel-Tower! ") == "eiffel tower"


def test_exact_and_normalised_with_aliases():
    assert exact_match("Paris", ["Paris"]) == 1.0 and exact_match("paris", ["Paris"]) == 0.0
    assert normalised_match("the Sunset Blvd.", ["Sunset Boulevard", "Sunset Blvd"]) == 1.0
    assert normalised_match("Sunset", ["Sunset Boulevard"]) == 0.0


def test_contains_needs_whole_words():
    assert contains("The capital of France is Paris.", ["Paris"]) == 1.0
    assert contains("Parisian food is good", ["Paris"]) == 0.0
    assert contains("It is 100 degrees", ["100", "one hundred"]) == 1.0
    assert contains("It is 1000 degrees", ["100"]) == 0.0


def test_token_f1():
    assert token_f1("the cat sat", ["cat sat down"]) == pytest.approx(
        2 * (2 / 2) * (2 / 3) / (1 + 2 / 3)
    )
    assert token_f1("dog", ["cat"]) == 0.0
    assert token_f1("x", ["cat", "x"]) == 1.0


def test_rouge_l():
    # LCS of "w x y z" and "w y z q" is "w y z" (3): P = 3/4, R = 3/4.
    assert rouge_l("w x y z", ["w y z q"]) == pytest.approx(0.75)
    assert rouge_l("", ["a"]) == 0.0


def test_wilson_interval_known_values():
    est = wilson(8, 10)
    assert est.mean == 0.8
    assert est.low == pytest.approx(0.4902, abs=1e-3) and est.high == pytest.approx(
        0.9433, abs=1e-3
    )
    zero = wilson(0, 20)
    assert zero.low == 0.0 and 0.15 < zero.high < 0.17


def test_bootstrap_interval_contains_mean_and_is_seeded():
    values = [0.1, 0.5, 0.9, 0.3, 0.7] * 10
    first, second = bootstrap_mean(values), bootstrap_mean(values)
    assert first == second and first.low < first.mean < first.high


def test_mcnemar_and_paired_difference():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    before = [1.0] * 40 + [0.0] * 60
    after = [0.0] * 20 + [1.0] * 20 + [0.0] * 60  # lost 20, kept 20
    diff = paired_difference(before, after)
    assert diff.delta == pytest.approx(-0.2) and diff.significant and diff.test == "McNemar exact"
    same = paired_difference(before, before)
    assert same.delta == 0 and not same.significant
    graded = paired_difference([0.5, 0.6, 0.7] * 10, [0.5, 0.6, 0.7] * 10)
    assert graded.test == "paired permutation" and math.isclose(graded.p_value, 1.0)


def test_json_fields_needs_the_same_keys_and_short_fields_but_not_the_free_text():
    from specialize.evaluate.metrics import json_fields

    reference = '{"category": "fraud", "priority": "urgent", "reply": "Hej Anna! Block the card in the app and dispute it."}'
    assert (
        json_fields(
            '{"category": "fraud", "priority": "urgent", "reply": "Hej! Other words."}', [reference]
        )
        == 1.0
    )
    assert (
        json_fields(
            'Sure: {"category": "fraud", "priority": "urgent", "reply": "x"} hope it helps',
            [reference],
        )
        == 1.0
    )
    assert (
        json_fields('{"category": "fraud", "priority": "high", "reply": "x"}', [reference]) == 0.0
    )
    assert json_fields('{"category": "fraud", "priority": "urgent"}', [reference]) == 0.0
    assert (
        json_fields('{"category": "fraud", "priority": "urgent", "reply": ""}', [reference]) == 0.0
    )
    assert (
        json_fields('{"category": "fraud", "priority": "urgent", "reply": "x"', [reference]) == 0.0
    )
    assert json_fields("no json here", [reference]) == 0.0
