"""DPO on the tiny model: loss falls on a learnable toy preference, and the model moves toward the
chosen answers; the reference is the base with the adapter off."""

import json

import yaml


def _toy_preferences(path, count=24):
    topics = [
        "card",
        "loan",
        "fee",
        "transfer",
        "account",
        "login",
        "mortgage",
        "savings",
        "limit",
        "pin",
        "address",
        "complaint",
    ]
    rows = []
    for i in range(count):
        topic, other = topics[i % 12], topics[(i * 5 + 3) % 12]
        rows.append(
            {  # distinct enough that the data stage keeps every row
                "prompt": [
                    {
                        "role": "user",
                        "content": f"My {topic} and my {other}: question {i} for Nordvik?",
                    }
                ],
                "chosen": [
                    {
                        "role": "assistant",
                        "content": f"Hej! Thank you for asking about your {topic}; we help today.",
                    }
                ],
                "rejected": [{"role": "assistant", "content": f"{other} {i} no"}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dpo_loss_falls_and_chosen_answers_gain(cli, tiny_recipe, tmp_path, monkeypatch):
    from specialize.train import packed_rows

    packed = []  # batches whose rows ran packed into one, without padding (the policy and reference)
    original = packed_rows._packed
    monkeypatch.setattr(
        packed_rows, "_packed", lambda *a, **k: packed.append(1) or original(*a, **k)
    )
    data = _toy_preferences(tmp_path / "prefs.jsonl")
    recipe = tiny_recipe(
        method="dpo",
        data={"train": [str(data)]},
        training={"epochs": 3, "batch_size": 4, "learning_rate": 5e-3, "max_length": 128},
        eval={"every_steps": 4, "patience": None, "log_every_steps": 1},
        retention={"suite": "none"},
    )
    file = tmp_path / "dpo.yaml"
    file.write_text(yaml.safe_dump(recipe))
    code, _, err = cli("train", file, "--no-progress")
    assert code == 0, err
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) >= 4 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    margins = [m["rewards/margins"] for m in metrics if "rewards/margins" in m]
    assert (
        margins and margins[-1] > 0
    )  # the policy prefers chosen over rejected, relative to the reference
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["method"] == "dpo"
    assert (run / "adapter" / "adapter_config.json").is_file()
    steps = record["outcome"]["steps"]
    assert steps >= 4 and len(packed) >= 2 * steps  # a policy and a reference pass a step


def test_dpo_refuses_replay_and_full_fine_tuning(cli, tiny_recipe, tmp_path):
    data = _toy_preferences(tmp_path / "prefs.jsonl", 8)
    for overrides, message in (
        (
            {"data": {"train": [str(data)], "replay": {"source": str(data), "ratio": 0.2}}},
            "data.replay",
        ),
        ({"data": {"train": [str(data)]}, "adaptation": {"kind": "full"}}, "adaptation.kind: lora"),
    ):
        recipe = tiny_recipe(method="dpo", retention={"suite": "none"}, **overrides)
        file = tmp_path / "dpo.yaml"
        file.write_text(yaml.safe_dump(recipe))
        code, _, err = cli(
            "train", file, "--no-progress", "--set", f"output.dir={tmp_path / 'r'}{len(message)}"
        )
        assert code == 2 and message in err
