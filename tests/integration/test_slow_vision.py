"""Slow: the real default model and the real ImageNet encoder go through the vision recipe.

A few steps only (a CPU suite cannot afford the full card example): both stages run, the
projector and LoRA move, the adapter carries its projector, the base text model still loads the
adapter for retention, and held-out card photos are scored for the tuned VLM, the text-only base
and the blind control, each with n and a 95% interval.
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "examples" / "nordvik" / "vision"


def rows(split: str, count: int, folder: Path) -> Path:
    data = [json.loads(line) for line in (CARDS / f"{split}.jsonl").read_text().splitlines()]
    data = [r for r in data if r["category"] == "name"][:count]
    for row in data:
        row["images"] = [str(CARDS / row["images"][0])]
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


@pytest.mark.slow
def test_real_model_trains_a_card_vlm_and_scores_three_systems(default_model, tmp_path):
    from specialize.config import build_config
    from specialize.evaluate.vision import evaluate_image_items
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train

    recipe = build_config(
        RecipeConfig,
        {
            "model": default_model,
            "method": "sft",
            "data": {
                "train": [str(rows("train", 8, tmp_path))],
                "val": [str(rows("val", 2, tmp_path))],
            },
            "vision": {"align_steps": 2},
            "training": {"max_steps": 2, "batch_size": 2, "max_length": 192, "learning_rate": 1e-3},
            "eval": {"every_steps": 2, "patience": None},
            "retention": {"suite": "none"},
            "output": {"dir": str(tmp_path / "run")},
        },
    )
    run = train(recipe, progress=False)
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 4 and all(0 < x < 20 for x in losses)
    adapter = run.adapter
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())
    spec = json.loads((adapter / "vision.json").read_text())
    assert spec["pretrained"] and spec["hidden_size"] == 576  # SmolLM2-135M's width
    report = evaluate_image_items(
        default_model,
        run.path,
        rows("test", 2, tmp_path),
        out=tmp_path / "eval.json",
        max_new_tokens=6,
        progress=False,
    )
    for system in ("tuned", "text_only", "blind"):
        summary = report["summary"][system]
        assert summary["n"] == 2 and 0 <= summary["ci95"][0] <= summary["ci95"][1] <= 1
    assert report["items"][0]["text_only"]["output"]  # the base answered from the text alone
