"""Labeller tokens, and agreement among many labellers with gaps (Krippendorff) or two (Cohen)."""

import pytest

from specialize.errors import ConfigError
from specialize.feedback import identity
from specialize.feedback.export import agreement, krippendorff_alpha


def test_tokens_name_their_labeller_in_their_session_only():
    token = identity.issue("s1", "Ada Lovelace")
    assert identity.verify("s1", token) == "Ada Lovelace"
    assert identity.verify("s2", token) is None
    name, _, signature = token.partition(".")
    assert (
        identity.verify("s1", identity.issue("s1", "bob").split(".")[0] + "." + signature) is None
    )
    assert identity.verify("s1", "") is None and identity.verify("s1", "!!!.x") is None
    assert identity.issue("s1", "Ada Lovelace") == token  # stable across restarts (kept secret)
    with pytest.raises(ConfigError):
        identity.issue("s1", "x" * 65)


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    # missing values; nominal alpha = 0.743.
    units = [
        [1, 1, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [5, 5, 5],
        [1, 1],
        [3],
    ]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None  # no variation: undefined


def labels(rows):
    return [{"pair_id": p, "annotator": a, "choice": c} for p, a, c in rows]


def test_agreement_reports_alpha_with_an_interval_and_kappa_only_for_two():
    two = labels(
        [
            ("p1", "ada", "a"),
            ("p1", "bob", "a"),
            ("p2", "ada", "b"),
            ("p2", "bob", "a"),
            ("p3", "ada", "b"),
            ("p3", "bob", "b"),
            ("p4", "ada", "b"),
            ("p4", "bob", "b"),
        ]
    )
    summary = agreement(two)
    assert summary["percent_agreement"] == 75.0 and summary["cohen_kappa"] == pytest.approx(0.5)
    alpha = summary["krippendorff_alpha"]
    assert alpha["value"] == pytest.approx(1 - 7 * 2 / 30, abs=1e-3)  # n=8, n_a=3, n_b=5
    assert alpha["n_pairs"] == 4 and alpha["ci95"][0] <= alpha["value"] <= alpha["ci95"][1]
    many = two + labels([("p1", "cy", "a"), ("p3", "cy", "tie"), ("p5", "cy", "a")])
    summary = agreement(many)
    assert summary["cohen_kappa"] is None and summary["pairs_with_two_or_more"] == 4
    assert summary["krippendorff_alpha"]["n_labels"] == 10  # p5 has one label: no pairable value
