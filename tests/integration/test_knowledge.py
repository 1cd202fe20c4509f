"""Knowledge that sticks, through the CLI on the tiny model: RAFT training rows, fact augmentation,
and the prompt-format skew check in eval, ladder and serve, on a small domain laid out as a new
user brings it (Alpaca training rows, eval items with a system prompt, facts in documents)."""

import json

import pytest
import yaml

from specialize.data.retrieval import EXCERPTS_HEADER

INSTRUCTION = "Answer the passenger's question with the exact figure from Fjordline's rules."
FACTS = [  # (document, question, answer)
    ("fares.md", "How much is a bicycle on the Bergen ferry?", "A bicycle costs 90 NOK."),
    ("fares.md", "What does a pet ticket cost?", "A pet travels for 150 NOK."),
    ("fares.md", "How much is the cabin upgrade?", "The cabin upgrade is 420 NOK."),
    ("times.md", "When does the first ferry leave Stavanger?", "The first ferry leaves at 06:15."),
    ("times.md", "How early must cars check in?", "Cars check in 45 minutes before."),
    ("times.md", "When does the last ferry arrive in Bergen?", "It arrives at 23:40."),
    ("rules.md", "How many bags may I bring?", "You may bring 3 bags."),
    ("rules.md", "Who handles lost luggage?", "Fjordline Service Desk in Haugesund."),
]
DOCS = {
    "fares.md": "# Fares\n\nA bicycle on any Bergen ferry costs 90 NOK.\n\n"
    "Pets travel for 150 NOK per trip.\n\nA cabin upgrade costs 420 NOK per night.",
    "times.md": "# Times\n\nThe first ferry leaves Stavanger at 06:15 every day.\n\n"
    "Cars must check in 45 minutes before departure.\n\nThe last ferry arrives in Bergen at 23:40.",
    "rules.md": "# Rules\n\nEach passenger may bring 3 bags.\n\n"
    "Lost luggage is handled by the Fjordline Service Desk in Haugesund.",
}


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("fjordline")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text)
    alpaca = [
        {"instruction": INSTRUCTION, "input": q, "output": a, "document": d} for d, q, a in FACTS
    ]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca[:6]))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca[6:]))
    data = {
        "sources": [
            {"path": "train.jsonl", "split": "train"},
            {"path": "val.jsonl", "split": "val"},
        ],
        "model": None,
        "augment": {"phrasings": 2, "seed": 1},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    items = [
        {
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ],
            "document": d,
        }
        for d, q, a in FACTS
    ]
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return root


@pytest.fixture(scope="module")
def knowledge_run(domain, tiny_model_dir, tmp_path_factory):
    """One tiny RAFT run (trained once for the module) through `specialize train`."""
    import os

    from specialize.cli.main import main

    home = tmp_path_factory.mktemp("knowledge-home")
    recipe = {
        "model": str(tiny_model_dir),
        "method": "sft",
        "data": {
            "train": [str(domain / "data.yaml")],
            "raft": {"documents": "docs", "top_k": 2, "distractors": 1, "p_oracle_dropped": 0.25},
        },
        "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-3, "max_length": 384},
        "eval": {"every_steps": 2, "patience": None},
        "retention": {"suite": "none"},
        "output": {"dir": str(domain / "run"), "name": "fjordline"},
    }
    (domain / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(home)
    try:
        assert main(["train", str(domain / "recipe.yaml"), "--no-progress"]) == 0
    finally:
        os.environ.pop("SPECIALIZE_HOME") if old is None else os.environ.update(SPECIALIZE_HOME=old)
    return domain / "run"


def test_augmented_rows_stay_in_train_and_raft_gives_every_one_context(knowledge_run, domain):
    manifest = json.loads((knowledge_run / "data" / "data" / "manifest.json").read_text())
    generated = manifest["counts"]["generated"]
    assert generated["from_train_rows"] == 6 and generated["rows"] >= 6
    assert manifest["outputs"]["train"]["rows"] == 6 + generated["rows"]
    assert manifest["outputs"]["val"]["rows"] == 2
    raft = json.loads((knowledge_run / "raft" / "manifest.json").read_text())
    assert raft["counts"]["train"]["rows_with_context"] == 6 + generated["rows"]
    assert raft["counts"]["val"]["rows_with_context"] == 2


def test_raft_rows_are_trained_and_recorded_in_config_and_run_record(knowledge_run, domain):
    config = yaml.safe_load((knowledge_run / "config.yaml").read_text())
    assert config["data"]["raft"]["documents"] == str((domain / "docs").resolve())
    manifest = json.loads((knowledge_run / "raft" / "manifest.json").read_text())
    train_counts = manifest["counts"]["train"]
    assert train_counts["rows_with_context"] == train_counts["rows"]
    assert train_counts["oracle_dropped"] + train_counts["oracle_kept"] == train_counts["rows"]
    record = json.loads((knowledge_run / "run.json").read_text())
    assert record["status"] == "finished" and record["raft"]["counts"] == manifest["counts"]
    rows = [
        json.loads(x) for x in (knowledge_run / "raft" / "train.jsonl").read_text().split("\n") if x
    ]
    assert all(EXCERPTS_HEADER in r["messages"][0]["content"] for r in rows)
    assert all(r["messages"][1]["content"].startswith(INSTRUCTION) for r in rows)  # Alpaca layout
    assert any("generated" in r for r in rows)


def test_ladder_warns_about_the_layout_and_shows_context_as_the_adapter_trained(
    knowledge_run, domain, tiny_model_dir, tmp_path
):
    from specialize.config import build_config
    from specialize.ladder.config import LadderConfig
    from specialize.ladder.run import run_ladder

    config = build_config(
        LadderConfig,
        {
            "model": str(tiny_model_dir),
            "rungs": ["tuned", "tuned+rag"],
            "tasks": [
                {
                    "name": "fares",
                    "data": str(domain / "eval.jsonl"),
                    "breakdown": "document",
                    "max_new_tokens": 4,
                }
            ],
            "rag": {"documents": str(domain / "docs"), "top_k": 5},
            "tuned": {"adapters": [str(knowledge_run)]},
            "batch_size": 8,
        },
    )
    report = run_ladder(config, tmp_path / "ladder", cache=tmp_path / "cache", progress=False)
    check = report["prompt_format"]["tuned+rag"]
    assert check["checked"] and check["skewed"]
    assert check["training"]["instruction"] == "user turn" and check["training"]["context"]
    assert check["requests"]["instruction"] == "system turn"
    assert "Put the requests' instruction in the user turn" in check["warning"]
    assert "prompt-format skew" in (tmp_path / "ladder" / "ladder.html").read_text()
    rows = json.loads((tmp_path / "ladder/rungs/tuned-plus-rag/eval.json").read_text())
    result = rows["tasks"]["fares"]
    assert result["context"]["top_k"] == 3 and "data.raft" in result["context"]["from"]
    assert all(len(r["retrieved"]) <= 3 for r in result["items"])
    breakdown = report["tasks"]["fares"]["rungs"]["tuned"]["breakdown"]
    assert set(breakdown) == {"fares.md", "times.md", "rules.md"}
    # the fix the warning names, applied by the ladder: prompts laid out as in training
    config.tuned.conform_layout = True
    fixed = run_ladder(config, tmp_path / "fixed", cache=tmp_path / "cache", progress=False)
    for rung in ("tuned", "tuned+rag"):
        check = fixed["prompt_format"][rung]
        assert check["conformed"] and not check["skewed"], check.get("warning")
    rows = json.loads((tmp_path / "fixed/rungs/tuned-plus-rag/eval.json").read_text())
    prompt = rows["tasks"]["fares"]["items"][0]["prompt"]
    assert prompt[0]["content"].startswith(EXCERPTS_HEADER)
    assert prompt[1]["content"].startswith(INSTRUCTION + "\n\n")


def test_serve_warns_once_per_new_mismatch_and_lists_it(knowledge_run, tiny_model_dir):
    from specialize.adapters import registry
    from specialize.adapters.host import ModelHost
    from specialize.models.generation import GenerationSettings
    from specialize.serve.openai_api import _prompt_format

    registry.register("fjordline", knowledge_run, base_model=str(tiny_model_dir))
    host = ModelHost(str(tiny_model_dir), ["fjordline"])
    settings = GenerationSettings(max_new_tokens=2)
    as_trained = [
        {"role": "system", "content": f"{EXCERPTS_HEADER}\n[fares.md] A bicycle costs 90 NOK."},
        {"role": "user", "content": f"{INSTRUCTION}\n\nHow much is a bicycle?"},
    ]
    host.chat("fjordline", as_trained, settings)
    assert "fjordline" not in host.format_warnings
    skewed = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": "Bicycle?"}]
    for _ in range(2):
        host.chat("fjordline", skewed, settings)
    info = _prompt_format(host, "fjordline")
    assert info["requests_skewed"] == 2 and "instruction placement" in info["prompt_format_warning"]
    assert "user turn" in info["training_format"]
