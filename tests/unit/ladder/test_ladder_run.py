"""Every rung runs on the tiny model, answers the same items, and re-runs come from the cache."""

import json
from pathlib import Path

import pytest

from specialize.config import build_config
from specialize.errors import ConfigError
from specialize.evaluate.tasks import load_eval_items
from specialize.ladder.config import LadderConfig
from specialize.ladder.prompts import EXCERPTS_HEADER, ExamplePool, RungPrompts
from specialize.ladder.retrieval import DocumentRetriever
from specialize.ladder.run import run_ladder
from specialize.ladder.rungs import LazyModels
from tests.conftest import REPO

NORDVIK = REPO / "examples" / "nordvik"
TEST = NORDVIK / "data" / "test.jsonl"


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("adapter")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(
        model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    peft.save_pretrained(path)
    return path


def _config(model, adapter, **overrides) -> LadderConfig:
    raw = {
        "model": str(model),
        "tasks": [
            {
                "name": "policy",
                "data": str(TEST),
                "category": "policy",
                "max_new_tokens": 6,
                "breakdown": "fact",
            },
            {
                "name": "structured",
                "data": str(TEST),
                "category": "structured",
                "metric": "json_fields",
                "max_new_tokens": 6,
                "system": "Reply in JSON.",
            },
        ],
        "prompt": {"examples": str(NORDVIK / "data" / "train.jsonl"), "shots": 2},
        "rag": {"documents": str(NORDVIK / "docs")},
        "tuned": {"adapters": [f"mine={adapter}"]},
        "limit": 4,
        "batch_size": 4,
    }
    raw.update(overrides)
    return build_config(LadderConfig, raw)


def test_every_rung_answers_the_same_items_and_a_rerun_is_cached(
    tiny_model_dir, tiny_adapter, tmp_path, monkeypatch
):
    config = _config(tiny_model_dir, tiny_adapter)
    report = run_ladder(config, tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert report["order"] == ["base", "prompt", "rag", "tuned", "tuned+rag"]
    for task in report["tasks"].values():
        assert task["n"] == 4 and set(task["rungs"]) == set(report["order"])
        decision = task["decision"]  # a random tiny model may solve nothing: then no recommendation
        assert decision["recommended"] in ([None] if decision["unsolved"] else report["order"])
        for info in task["rungs"].values():
            assert info["score"]["n"] == 4 and info["seconds_per_item"] > 0
            rows = json.loads(Path(info["eval_file"]).read_text())["tasks"]
            assert len({r["id"] for t in rows.values() for r in t["items"]}) == 8
    rungs = report["tasks"]["structured"]["rungs"]
    assert rungs["rag"]["prompt_tokens_per_item"] > rungs["base"]["prompt_tokens_per_item"]
    assert set(report["tasks"]["policy"]["rungs"]["base"]["breakdown"]) <= {"trained", "docs-only"}
    # a bare adapter folder has no training rows to compare with: recorded as unchecked
    assert set(report["prompt_format"]) == {"tuned", "tuned+rag"}
    assert report["prompt_format"]["tuned"]["checked"] is False
    assert (tmp_path / "out" / "ladder.html").read_text().count("<table>") >= 2

    monkeypatch.setattr(
        LazyModels, "_load", lambda self: pytest.fail("loaded the model for cached rungs")
    )
    again = run_ladder(config, tmp_path / "out2", cache=tmp_path / "cache", progress=False)
    assert (
        again["tasks"]["policy"]["rungs"]["tuned"]["score"]
        == report["tasks"]["policy"]["rungs"]["tuned"]["score"]
    )


def test_the_adapter_changes_answers_and_the_base_rung_does_not_see_it(
    tiny_model_dir, tiny_adapter, tmp_path
):
    config = _config(tiny_model_dir, tiny_adapter, rungs=["base", "tuned"])
    run_ladder(config, tmp_path / "out", cache=tmp_path / "cache", progress=False)
    outputs = {
        rung: [
            r["output"]
            for r in json.loads((tmp_path / "out" / "rungs" / rung / "eval.json").read_text())[
                "tasks"
            ]["policy"]["items"]
        ]
        for rung in ("base", "tuned")
    }
    assert outputs["base"] != outputs["tuned"]
    plain = _config(tiny_model_dir, tiny_adapter, rungs=["base"])
    alone = run_ladder(plain, tmp_path / "alone", cache=tmp_path / "cache2", progress=False)
    rows = json.loads(Path(alone["tasks"]["policy"]["rungs"]["base"]["eval_file"]).read_text())[
        "tasks"
    ]["policy"]["items"]
    assert [r["output"] for r in rows] == outputs["base"]


def test_rungs_build_their_prompts_from_the_right_ingredients():
    items = [i for i in load_eval_items(TEST) if i.category == "structured"][:2]
    task = _config("m", "a").tasks[1]
    prompts = RungPrompts(
        task,
        ExamplePool(str(NORDVIK / "data" / "train.jsonl")),
        2,
        DocumentRetriever(NORDVIK / "docs"),
        3,
    )
    item = items[0]
    assert prompts.build("base", item) == item.prompt == prompts.build("tuned", item)
    few_shot = prompts.build("prompt", item)
    assert few_shot[0] == {"role": "system", "content": "Reply in JSON."}
    assert len(few_shot) == len(item.prompt) + 4 and few_shot[-1] == item.prompt[-1]
    assert few_shot[2]["content"].startswith("{")  # examples from the same task: JSON replies
    rag = prompts.build("rag", item)
    assert rag[0]["content"].startswith("Reply in JSON.") and EXCERPTS_HEADER in rag[0]["content"]
    tuned_rag = prompts.build("tuned+rag", item)
    assert (
        tuned_rag[0]["content"].startswith(item.prompt[0]["content"])
        and EXCERPTS_HEADER in tuned_rag[0]["content"]
    )


def test_a_rung_without_its_ingredients_is_a_config_error():
    with pytest.raises(ConfigError, match="rag.documents"):
        build_config(LadderConfig, {"tasks": [{"name": "t", "data": "x"}], "rungs": ["rag"]})
    with pytest.raises(ConfigError, match="tuned.adapters"):
        build_config(LadderConfig, {"tasks": [{"name": "t", "data": "x"}], "rungs": ["tuned"]})
    with pytest.raises(ConfigError, match="unknown metric"):
        build_config(
            LadderConfig,
            {"tasks": [{"name": "t", "data": "x", "metric": "bleu"}], "rungs": ["base"]},
        )
