"""A reward model on the tiny model ranks held-out pairs of a learnable toy preference above chance."""

import json

import yaml

from tests.unit.train.test_dpo import _toy_preferences


def test_reward_model_ranks_held_out_pairs_above_chance(cli, tiny_recipe, tmp_path, monkeypatch):
    from specialize.train import packed_rows

    packed = []  # batches whose rows ran packed into one, without padding
    original = packed_rows._packed_scores
    monkeypatch.setattr(
        packed_rows, "_packed_scores", lambda *a, **k: packed.append(1) or original(*a, **k)
    )
    train = _toy_preferences(tmp_path / "train.jsonl", 32)
    val = tmp_path / "val.jsonl"
    rows = [
        json.loads(line)
        for line in _toy_preferences(tmp_path / "all.jsonl", 48).read_text().splitlines()
    ]
    val.write_text(
        "".join(json.dumps(r) + "\n" for r in rows[32:])
    )  # questions 32..47: never trained on
    recipe = tiny_recipe(
        method="reward",
        data={"train": [str(train)], "val": [str(val)]},
        training={"epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "max_length": 128},
        eval={"every_steps": 8, "patience": None, "log_every_steps": 2},
    )
    file = tmp_path / "reward.yaml"
    file.write_text(yaml.safe_dump(recipe))
    code, _, err = cli("train", file, "--no-progress")
    assert code == 0, err
    run = tmp_path / "run"
    accuracy = json.loads((run / "preference_accuracy.json").read_text())
    assert accuracy["n"] == 16 and accuracy["accuracy"] >= 0.75 and accuracy["ci95"][0] > 0.5
    record = json.loads((run / "run.json").read_text())
    assert record["outcome"]["chosen"]["held_out_preference_accuracy"] == accuracy["accuracy"]
    assert record["outcome"]["retention"]["suite"] == "none"
    losses = [
        json.loads(line)["loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert losses[-1] < losses[0]
    assert len(packed) >= record["outcome"]["steps"] >= 8
