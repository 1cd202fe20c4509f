"""Judges against rule checks, turn by turn: Cohen's kappa with n and a CI, raw agreement with a
Wilson CI, and kappa reported undefined (never a made-up number) when a rater never varies."""

import pytest

from specialize.evaluate.stats import agreement
from specialize.simulate.report import judge_report


def test_kappa_matches_the_textbook_value_and_carries_n_and_intervals():
    # 10 items: both pass 4, both fail 3, only first 2, only second 1 -> po 0.7, pe 0.5, kappa 0.4
    first = [True] * 4 + [False] * 3 + [True] * 2 + [False]
    second = [True] * 4 + [False] * 3 + [False] * 2 + [True]
    found = agreement(first, second).as_dict()
    assert found["n"] == 10 and found["kappa"] == pytest.approx(0.4)
    assert found["counts"] == {
        "both_pass": 4,
        "both_fail": 3,
        "only_first_pass": 2,
        "only_second_pass": 1,
    }
    assert found["agreement"]["mean"] == pytest.approx(0.7)
    assert found["agreement"]["ci_method"] == "wilson"
    low, high = found["kappa_ci95"]
    assert -1.0 <= low < 0.4 < high <= 1.0
    assert agreement(first, first).kappa == pytest.approx(1.0)


def test_kappa_is_undefined_when_both_raters_never_vary():
    found = agreement([True] * 5, [True] * 5).as_dict()
    assert found["kappa"] is None and found["kappa_ci95"] is None
    assert found["agreement"]["mean"] == 1.0 and found["agreement"]["ci95"][0] < 0.6  # n=5: wide
    with pytest.raises(ValueError):
        agreement([True], [True, False])


def _turn(rules: list[bool], judges: dict[str, bool | None]) -> dict:
    return {
        "checks": [
            {"check": f"r{i}", "kind": "in_domain", "passed": p} for i, p in enumerate(rules)
        ],
        "judges": [
            {"check": k, "kind": k, "passed": bool(v), "judge_failed": v is None, "reason": ""}
            for k, v in judges.items()
        ],
    }


def _row(key: str, turns: list[dict], final: dict[str, bool | None], rules: list[bool]) -> dict:
    checks = [{"check": "goal", "kind": "goal", "passed": p} for p in rules] + [
        {"check": k, "kind": k, "passed": bool(v), "judge_failed": v is None, "reason": "x"}
        for k, v in final.items()
    ]
    return {"key": key, "status": "ok", "turns": turns, "checks": checks}


def test_agreement_is_counted_per_turn_where_a_judge_and_a_rule_both_apply():
    rows = [
        _row(
            "a/one",
            [
                _turn([True, True], {"reward": True, "judge": None}),  # agree; LLM judge failed
                _turn([True, False], {"reward": True, "judge": False}),  # reward disagrees
                _turn([], {"reward": False, "judge": False}),  # no rule on this turn: not counted
            ],
            {"reward": False, "judge": False},
            [False],
        ),
        _row(
            "b/one", [_turn([False], {"reward": False, "judge": True})], {"reward": False}, [True]
        ),
        {"key": "c/one", "status": "errored", "turns": [_turn([True], {"reward": False})]},
    ]
    report = judge_report(rows)
    reward = report["agreement_with_rules"]["reward"]
    assert reward["n"] == 3  # a turn 1, a turn 2, b turn 1
    assert reward["counts"] == {
        "both_pass": 1,
        "both_fail": 1,
        "only_first_pass": 1,
        "only_second_pass": 0,
    }
    judge = report["agreement_with_rules"]["judge"]
    assert (
        judge["n"] == 2 and judge["counts"]["only_first_pass"] == 1
    )  # b: judge passed, rule failed
    # per conversation: the final verdict against every rule check of the conversation
    per_conversation = report["agreement_with_rules_per_conversation"]
    assert per_conversation["reward"]["n"] == 2 and per_conversation["judge"]["n"] == 1
    assert [f["key"] for f in report["failed"]] == []
