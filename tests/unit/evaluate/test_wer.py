"""Word error rate: normalisation, edit distance, corpus rate and its bootstrap interval."""

import math

from specialize.evaluate.speech import compare_wer
from specialize.evaluate.wer import (
    corpus_wer,
    normalise_transcript,
    number_words,
    score_item,
    word_edits,
)


def test_normaliser_makes_whisper_and_reference_styles_agree():
    assert normalise_transcript("10 of clubs.") == normalise_transcript("ten of clubs")
    assert normalise_transcript("And Mr. John Dashwood") == ["and", "mister", "john", "dashwood"]
    assert normalise_transcript("Send 4,500 kronor!") == [
        "send",
        "four",
        "thousand",
        "five",
        "hundred",
        "kronor",
    ]
    assert normalise_transcript("cold-hearted") == ["cold", "hearted"]
    assert number_words(1200) == "one thousand two hundred" and number_words(42) == "forty two"


def test_edits_count_substitutions_insertions_and_deletions():
    assert word_edits(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert word_edits(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert word_edits(["a", "b", "c"], ["a", "c"]) == 1
    assert word_edits(["a", "b"], ["a", "b", "c", "d"]) == 2
    assert word_edits([], ["a"]) == 1


def test_corpus_wer_is_total_edits_over_total_words_with_a_ci():
    items = [
        score_item("ten of clubs", "10 of clubs."),
        score_item("he was not an ill disposed young man", "he was not an old sposed young man"),
    ]
    estimate = corpus_wer(items)
    assert math.isclose(estimate.mean, 2 / 11)
    assert estimate.n == 2 and estimate.low <= estimate.mean <= estimate.high
    assert math.isnan(corpus_wer([]).mean)


def test_paired_comparison_gives_a_verdict_within_budget():
    def system(edits: int) -> dict:  # 30 recordings of 10 words each
        item = {"wer": edits / 10, "edits": edits, "reference_words": 10}
        return {"summary": {"wer": {"mean": edits / 10}}, "items": [item] * 30}

    before, worse, same = system(5), system(9), system(5)
    assert compare_wer(before, worse)["verdict"] == "regressed"
    corpus = compare_wer(before, worse)["corpus_delta"]
    assert corpus["n"] == 30 and abs(corpus["delta"] - 0.4) < 1e-9
    assert corpus["ci95"][0] <= corpus["delta"] <= corpus["ci95"][1]
    assert compare_wer(before, worse, budget_points=50)["verdict"] == "no significant change"
    assert compare_wer(worse, before)["verdict"] == "improved"
    assert compare_wer(before, same)["verdict"] == "no significant change"
