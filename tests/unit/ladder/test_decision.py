"""The recommendation rule on synthetic scores: cheapest rung not significantly worse than the best."""

from specialize.ladder.config import RUNG_ORDER
from specialize.ladder.decision import recommend

ORDER = list(RUNG_ORDER)


def test_a_cheap_rung_close_to_the_best_is_recommended():
    n = 40
    scores = {
        "base": [0.0] * n,
        "prompt": [1.0] * 30 + [0.0] * 10,
        "rag": [1.0] * 32 + [0.0] * 8,  # best, but only 2 items better than prompt
        "tuned": [1.0] * 31 + [0.0] * 9,
    }
    decision = recommend(scores, ORDER)
    assert decision.best == "rag"
    assert decision.recommended == "prompt"
    assert decision.against_best["prompt"].p_value >= 0.05
    assert decision.against_best["base"].p_value < 0.05
    assert "cheapest rung not significantly worse" in decision.reason


def test_tuning_is_recommended_only_when_everything_cheaper_is_significantly_worse():
    n = 40
    scores = {
        "base": [0.0] * n,
        "prompt": [1.0] * 5 + [0.0] * 35,
        "rag": [1.0] * 8 + [0.0] * 32,
        "tuned": [1.0] * 36 + [0.0] * 4,
        "tuned+rag": [1.0] * 37 + [0.0] * 3,
    }
    decision = recommend(scores, ORDER)
    assert decision.best == "tuned+rag"
    assert decision.recommended == "tuned"


def test_ties_go_to_the_cheaper_rung_and_the_best_may_be_the_cheapest():
    same = [1.0, 0.0] * 10
    assert recommend({"base": same, "prompt": same}, ORDER).best == "base"
    decision = recommend({"base": [1.0] * 30, "prompt": [0.0] * 30}, ORDER)
    assert decision.best == decision.recommended == "base"


def test_continuous_scores_use_the_permutation_test():
    scores = {"base": [0.1, 0.2, 0.3] * 10, "tuned": [0.8, 0.9, 0.7] * 10}
    decision = recommend(scores, ORDER)
    assert decision.recommended == "tuned"
    assert decision.against_best["base"].test == "paired permutation"
