"""Prompt-format skew: Alpaca-trained adapters asked with a system prompt are warned about, with the fix."""

import json

import pytest
import yaml

from specialize.data.retrieval import EXCERPTS_HEADER
from specialize.evaluate.skew import Layout, check_skew, conform, layout_of, training_format

TICKETS = ["my card was stolen", "I cannot log in", "why was I charged twice", "loan question"]
INSTRUCTION = "Classify the support ticket into one category."


def _alpaca_chat(ticket: str) -> dict:
    """What the data stage makes of an Alpaca row {instruction, input, output}."""
    return {
        "messages": [
            {"role": "user", "content": f"{INSTRUCTION}\n\n{ticket}"},
            {"role": "assistant", "content": "card_lost"},
        ]
    }


def _system_item(ticket: str) -> list[dict]:
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": ticket}]


def _fake_run(path, rows, *, raft=False, model="some-model"):
    """A run directory as `specialize train` leaves it: config, prepared data, record, adapter/."""
    raw = path / "raw" / "tickets.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("")
    prepared = path / "run" / "data" / "tickets"
    prepared.mkdir(parents=True)
    (prepared / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"train": [str(raw)], "val": []}
    if raft:
        data["raft"] = {"documents": str(path)}
    (path / "run" / "config.yaml").write_text(yaml.safe_dump({"model": model, "data": data}))
    (path / "run" / "run.json").write_text(json.dumps({"model": model}))
    return path / "run"


def test_layouts_tell_where_the_instruction_sits():
    alpaca = layout_of([_alpaca_chat(t)["messages"][:-1] for t in TICKETS], "chat template x")
    assert (alpaca.system, alpaca.instruction, alpaca.context) == (False, "user turn", False)
    system = layout_of([_system_item(t) for t in TICKETS], "chat template x")
    assert (system.system, system.instruction) == (True, "system turn")
    persona = [
        [{"role": "system", "content": "You are helpful."}, *_alpaca_chat(t)["messages"][:-1]]
        for t in TICKETS
    ]
    assert layout_of(persona, "t").instruction == "user turn"  # a persona is not the instruction
    assert layout_of(["raw prompt one", "raw two"], "t").template.startswith("raw text")
    with_context = [
        [{"role": "system", "content": f"{INSTRUCTION}\n\n{EXCERPTS_HEADER}\n[a.md] x"}, m[1]]
        for m in (_system_item(t) for t in TICKETS)
    ]
    assert layout_of(with_context, "t").context


def test_alpaca_training_with_system_prompt_requests_warns_with_the_fix(tmp_path, caplog):
    run = _fake_run(tmp_path, [_alpaca_chat(t) for t in TICKETS])
    check = check_skew(run / "adapter", [_system_item(t) for t in TICKETS])
    assert check.skewed and check.training.instruction == "user turn"
    assert check.requests.instruction == "system turn"
    warning = check.as_dict()["warning"]
    assert "no system prompt, instruction in the user turn" in warning  # the training layout
    assert "a system prompt, instruction in the system turn" in warning  # the requests' layout
    assert "Put the requests' instruction in the user turn" in warning  # the fix
    assert "prompt-format skew" in caplog.text
    assert check.training_rows == [str(run / "data" / "tickets" / "train.jsonl")]
    same = check_skew(run, [_alpaca_chat(t)["messages"][:-1] for t in TICKETS])
    assert not same.skewed and "warning" not in same.as_dict()


def test_retrieved_excerpts_the_adapter_never_saw_are_a_mismatch_unless_it_trained_with_raft(
    tmp_path,
):
    rows = [
        {"messages": [*_system_item(t), {"role": "assistant", "content": "x"}]} for t in TICKETS
    ]
    requests = [
        [{"role": "system", "content": f"{INSTRUCTION}\n\n{EXCERPTS_HEADER}\n[a.md] x"}, m[1]]
        for m in (_system_item(t) for t in TICKETS)
    ]
    plain = check_skew(_fake_run(tmp_path / "plain", rows), requests)
    assert plain.mismatches == ["retrieved excerpts (in the requests, never in training)"]
    assert "data.raft" in plain.fixes[0]
    raft = _fake_run(tmp_path / "raft", rows, raft=True)
    assert training_format(raft).layout.context
    assert not check_skew(raft, requests).skewed


def test_conform_lays_requests_out_as_training_did():
    lead = " ".join(INSTRUCTION.lower().split())
    alpaca = Layout(False, "user turn", False, "t", 4, lead)
    assert conform(_system_item("my card"), alpaca) == [
        {"role": "user", "content": f"{INSTRUCTION}\n\nmy card"}
    ]
    raft = Layout(True, "user turn", True, "t", 4, lead)
    with_context = [
        {"role": "system", "content": f"{INSTRUCTION}\n\n{EXCERPTS_HEADER}\n[a.md] x"},
        {"role": "user", "content": "my card"},
    ]
    assert conform(with_context, raft) == [
        {"role": "system", "content": f"{EXCERPTS_HEADER}\n[a.md] x"},
        {"role": "user", "content": f"{INSTRUCTION}\n\nmy card"},
    ]
    in_system = Layout(True, "system turn", False, "t", 4)
    assert conform(_alpaca_chat("my card")["messages"][:-1], in_system) == _system_item("my card")
    assert conform("raw text", alpaca) == "raw text"
    # conformed requests no longer differ from the training rows
    run_rows = [_alpaca_chat(t) for t in TICKETS]
    requests = [conform(_system_item(t), alpaca) for t in TICKETS]
    assert layout_of(requests, "t", lead).instruction == "user turn"
    assert layout_of([r["messages"][:-1] for r in run_rows], "t").lead == lead


def test_an_adapter_outside_a_run_is_recorded_as_unchecked(tmp_path):
    check = check_skew(tmp_path, [_system_item("x")]).as_dict()
    assert check["checked"] is False and not check["skewed"] and "not found" in check["note"]


@pytest.fixture
def adapter_in_run(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = _fake_run(tmp_path, [_alpaca_chat(t) for t in TICKETS], model=str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        run / "adapter"
    )
    return run


def test_eval_records_the_skew_before_it_runs(adapter_in_run, tiny_model_dir, tmp_path):
    from specialize.evaluate.evaluation import run_eval

    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"messages": [*_system_item(t), {"role": "assistant", "content": "a"}]})
            + "\n"
            for t in TICKETS[:2]
        )
    )
    report = run_eval(
        str(tiny_model_dir),
        adapter=adapter_in_run,
        data=items,
        metrics=["exact"],
        out=tmp_path / "eval.json",
        progress=False,
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["prompt_format"] == report["prompt_format"]
    assert saved["prompt_format"]["skewed"] and "instruction placement" in " ".join(
        saved["prompt_format"]["mismatches"]
    )
    fixed = run_eval(
        str(tiny_model_dir),
        adapter=adapter_in_run,
        data=items,
        metrics=["exact"],
        out=tmp_path / "fixed.json",
        progress=False,
        conform_layout=True,
    )
    assert fixed["prompt_format"]["conformed"] and not fixed["prompt_format"]["skewed"]
    first = fixed["task"]["items"][0]["prompt"]
    assert first == [{"role": "user", "content": f"{INSTRUCTION}\n\n{TICKETS[0]}"}]
