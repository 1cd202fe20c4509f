"""Ladder honesty: few-shot fallback is said and recorded, all-zero tasks are unsolved, any field selects."""

import json

import pytest

from specialize.config import build_config
from specialize.errors import DataError
from specialize.evaluate.tasks import load_eval_items
from specialize.ladder.config import RUNG_ORDER, LadderConfig
from specialize.ladder.decision import recommend
from specialize.ladder.prompts import ExamplePool, RungPrompts
from specialize.ladder.report import decision_lines, ladder_table, verdict
from specialize.ladder.run import run_ladder
from tests.conftest import REPO

TEST = REPO / "examples" / "nordvik" / "data" / "test.jsonl"


@pytest.fixture
def examples_without_system(tmp_path):
    """Alpaca-style training rows: the instruction in the user turn, no system prompt."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Classify this ticket: my card {what}"},
                {"role": "assistant", "content": '{"category": "card_lost"}'},
            ]
        }
        for what in ("was stolen", "is lost abroad", "got eaten by the ATM")
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_task_no_rung_scores_on_is_unsolved_not_recommended():
    zeros = [0.0] * 12
    decision = recommend({"base": zeros, "prompt": zeros, "tuned": zeros}, list(RUNG_ORDER))
    assert decision.unsolved and decision.recommended is None and decision.best is None
    assert "unsolved" in decision.reason and "12 items" in decision.reason
    assert "significantly worse" not in decision.reason
    assert verdict(decision.as_dict()).startswith("Unsolved")
    solved = recommend({"base": zeros, "tuned": [1.0] + zeros[1:]}, list(RUNG_ORDER))
    assert not solved.unsolved and solved.best == "tuned"
    assert verdict(solved.as_dict()) == "Recommended: base"  # one item is no significant gain


def test_few_shot_falls_back_to_the_nearest_examples_when_no_system_prompt_matches(
    examples_without_system,
):
    item = next(i for i in load_eval_items(TEST) if i.category == "structured")
    task = build_config(
        LadderConfig, {"tasks": [{"name": "s", "data": "x"}], "rungs": ["base"]}
    ).tasks[0]
    prompts = RungPrompts(task, ExamplePool(str(examples_without_system)), 2)
    shots = prompts.shots_for(item)
    assert shots.fallback and len(shots.examples) == 2 and "fallback" in shots.note()
    messages = prompts.build("prompt", item)
    assert len(messages) == len(item.prompt) + 4  # the examples are shown, not silently dropped
    assert messages[1]["content"].startswith("Classify this ticket")
    # rows that share the item's own system prompt are used as they are, without a fallback
    same = RungPrompts(task, ExamplePool(str(REPO / "examples/nordvik/data/train.jsonl")), 2)
    assert not same.shots_for(item).fallback


def test_ladder_records_the_fallback_selects_and_breaks_down_by_any_field(
    tiny_model_dir, examples_without_system, tmp_path
):
    config = build_config(
        LadderConfig,
        {
            "model": str(tiny_model_dir),
            "rungs": ["base", "prompt"],
            "tasks": [
                {
                    "name": "triage",
                    "data": str(TEST),
                    "where": {"task": "structured"},  # a field that is not `category`
                    "breakdown": "category",  # an item key, not only "other" fields
                    "metric": "exact",
                    "max_new_tokens": 3,
                }
            ],
            "prompt": {"examples": str(examples_without_system), "shots": 1},
            "limit": 3,
            "batch_size": 3,
        },
    )
    report = run_ladder(config, tmp_path / "out", cache=tmp_path / "cache", progress=False)
    task = report["tasks"]["triage"]
    assert task["n"] == 3
    few_shot = task["rungs"]["prompt"]["few_shot"]
    assert few_shot == {**few_shot, "items": 3, "with_examples": 3, "fallback": 3}
    assert "no few-shot example shares" in few_shot["note"]
    assert set(task["rungs"]["base"]["breakdown"]) == {"structured"}
    # a random tiny model matches no reference exactly: no rung is recommended
    assert task["decision"]["unsolved"] and task["decision"]["recommended"] is None
    html = (tmp_path / "out" / "ladder.html").read_text()
    assert "Unsolved" in html and "no few-shot example shares" in html
    assert "UNSOLVED" in str(ladder_table(report).columns[1].header)
    lines = decision_lines(report)  # the terminal's which-rung-for-which-task, with breakdowns
    assert lines[0].startswith("triage: Unsolved") and "  base by category: structured" in lines[1]
    rows = json.loads((tmp_path / "out/rungs/prompt/eval.json").read_text())["tasks"]["triage"]
    assert all(r["few_shot"].startswith("fallback") for r in rows["items"])


def test_selecting_on_a_field_no_row_has_names_the_fields_there_are(tmp_path):
    config = build_config(
        LadderConfig,
        {
            "model": "unused",
            "rungs": ["base"],
            "tasks": [{"name": "t", "data": str(TEST), "where": {"topic": "fees"}}],
        },
    )
    from specialize.ladder.run import _task_items

    with pytest.raises(DataError, match="no row has the field 'topic'") as error:
        _task_items(config.tasks[0], None)
    assert "fact_id" in str(error.value.fix) and "category" in str(error.value.fix)


def test_few_shot_examples_are_real_rows_never_generated_phrasings(tmp_path):
    original = {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "How much does the Everyday account cost?"},
            {"role": "assistant", "content": "25 SEK a month."},
        ]
    }
    phrased = json.loads(json.dumps(original))
    phrased["messages"][1]["content"] = "Quick question: how much does the Everyday account cost?"
    phrased["generated"] = {"by": "template:quick", "from": "abc"}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(original) + "\n" + json.dumps(phrased) + "\n")
    pool = ExamplePool(str(path))
    assert [e.user for e in pool.examples] == [original["messages"][1]["content"]]
    shots = pool.similar("What does the Everyday account cost?", "Answer briefly.", 2)
    assert len(shots.examples) == 1
