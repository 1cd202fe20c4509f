"""The canonical "it trains" tests on the tiny model: loss falls, the right parameters move."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from specialize.config import build_config
from specialize.train.config import RecipeConfig
from specialize.train.run import train


def losses(run):
    return [m["loss"] for m in run.metrics() if "loss" in m]


def base_weights(path):
    return load_file(str(path / "model.safetensors"))


def test_lora_sft_trains_the_adapter_and_leaves_the_base(tiny_recipe, tiny_model_dir):
    from specialize.artifacts import sha256_file

    on_disk = {p.name: sha256_file(p) for p in tiny_model_dir.iterdir() if p.is_file()}
    run = train(build_config(RecipeConfig, tiny_recipe()), progress=False)
    curve = losses(run)
    assert all(math.isfinite(x) for x in curve)
    assert sum(curve[-2:]) / 2 < sum(curve[:2]) / 2, curve
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = PeftModel.from_pretrained(base, run.adapter)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it
    for name, value in tuned.get_base_model().state_dict().items():
        if "lora_" not in name and name.replace("base_layer.", "") in before:
            assert torch.equal(value, before[name.replace("base_layer.", "")]), name
    assert {p.name: sha256_file(p) for p in tiny_model_dir.iterdir() if p.is_file()} == on_disk
    record = run.record()
    assert record.status == "finished" and record.chosen["checkpoint"]


def test_full_fine_tuning_changes_base_weights(tiny_recipe, tiny_model_dir):
    run = train(
        build_config(
            RecipeConfig, tiny_recipe(adaptation={"kind": "full"}, training={"learning_rate": 1e-3})
        ),
        progress=False,
    )
    curve = losses(run)
    assert sum(curve[-2:]) < sum(curve[:2]), curve
    before, after = base_weights(tiny_model_dir), base_weights(run.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_freeze_keeps_first_layers(tiny_recipe, tiny_model_dir):
    run = train(
        build_config(
            RecipeConfig,
            tiny_recipe(
                adaptation={"kind": "freeze", "freeze_layers": 1}, training={"learning_rate": 1e-3}
            ),
        ),
        progress=False,
    )
    before, after = base_weights(tiny_model_dir), base_weights(run.model)
    assert all(
        torch.equal(before[k], after[k]) for k in before if ".layers.0." in k or "embed_tokens" in k
    )
    assert any(not torch.equal(before[k], after[k]) for k in before if ".layers.1." in k)


def test_cpt_trains_on_packed_raw_text(tiny_recipe, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    import random

    words = [
        "fee",
        "card",
        "loan",
        "account",
        "branch",
        "transfer",
        "interest",
        "limit",
        "saving",
        "mortgage",
        "deposit",
        "rate",
        "app",
    ]
    rng = random.Random(0)
    for i in range(12):
        body = ". ".join(" ".join(rng.choices(words, k=9)) for _ in range(12))
        (docs / f"doc{i}.md").write_text(f"# Nordvik policy {i}\n{body}.")
    run = train(
        build_config(
            RecipeConfig,
            tiny_recipe(
                method="cpt",
                data={"train": [str(docs)]},
                training={"max_length": 128, "learning_rate": 5e-3},
            ),
        ),
        progress=False,
    )
    curve = losses(run)
    assert sum(curve[-2:]) < sum(curve[:2]), curve


def test_packed_rows_keep_document_lengths(tiny_model_dir):
    from specialize.models.loading import load_tokenizer
    from specialize.train.datasets import pack_rows, tokenize_for_cpt

    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = tokenize_for_cpt(
        tokenizer,
        [{"text": "short one"}, {"text": "another short document here"}, {"text": "x " * 100}],
    )
    packed = pack_rows(rows, 64)
    assert all(len(p["input_ids"]) <= 64 for p in packed)
    assert sum(len(p["input_ids"]) for p in packed) == sum(
        len(r["input_ids"]) for r in rows
    )  # nothing dropped
    assert all(sum(p["seq_lengths"]) == len(p["input_ids"]) for p in packed)


def test_replay_is_mixed_into_every_epoch(tiny_model_dir, tmp_path):
    general = tmp_path / "general.jsonl"
    general.write_text(
        "".join(
            json.dumps({"text": f"General knowledge sentence {i} about topic {i * 13}."}) + "\n"
            for i in range(40)
        )
    )
    from specialize.track.rundir import new_run_dir
    from specialize.train.config import ReplayConfig
    from specialize.train.datasets import gather_rows
    from tests.conftest import SUPPORT_DATA

    run = new_run_dir("replay", tmp_path / "r")
    replay = ReplayConfig(source=str(general), ratio=0.25)
    rows = gather_rows([str(SUPPORT_DATA)], [], replay, run, str(tiny_model_dir), epochs=2, seed=1)
    first, second = rows.train[: rows.rows_per_epoch], rows.train[rows.rows_per_epoch :]
    replayed = [sum("text" in r for r in epoch) for epoch in (first, second)]
    assert replayed[0] == replayed[1] == round(rows.rows_per_epoch * 0.25)
    assert {r["text"] for r in first if "text" in r} != {r["text"] for r in second if "text" in r}


def test_auto_precision_matches_the_cpu(monkeypatch):
    from specialize.train import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert precision.choose_precision("auto").name == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    chosen = precision.choose_precision("auto")
    assert chosen.name == "fp32" and "no AVX512-BF16" in chosen.reason
    assert precision.choose_precision("fp32").name == "fp32"


def test_recipe_checks_save_and_eval_intervals(tiny_recipe):
    from specialize.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of eval.every_steps"):
        build_config(RecipeConfig, tiny_recipe(eval={"every_steps": 4, "save_every_steps": 6}))
