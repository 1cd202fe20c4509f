"""RLHF on the tiny model: a reward model, then GRPO against it with a KL penalty, then the
reward model's win rate of the tuned policy over its start, with a CI."""

import json

import yaml

from tests.unit.train.test_dpo import _toy_preferences


def _train(cli, recipe, path):
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = cli("train", path, "--no-progress")
    assert code == 0, err


def test_grpo_against_a_reward_model_trains_and_is_judged(cli, tiny_recipe, tmp_path, monkeypatch):
    from specialize.train import packed_attention

    grouped = []
    original = packed_attention._grouped_attention

    def spy(query, *rest):  # GRPO's padded batches attend without repeated kv heads
        grouped.append(query.requires_grad)
        return original(query, *rest)

    monkeypatch.setattr(packed_attention, "_grouped_attention", spy)
    data = _toy_preferences(tmp_path / "prefs.jsonl", 24)
    reward_run = tmp_path / "reward-run"
    _train(
        cli,
        tiny_recipe(
            method="reward",
            data={"train": [str(data)]},
            training={"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "max_length": 128},
            output={"dir": str(reward_run)},
        ),
        tmp_path / "reward.yaml",
    )

    rl_run = tmp_path / "rl-run"
    _train(
        cli,
        tiny_recipe(
            method="rl",
            data={"train": [str(data)]},
            # two prompts of 4 completions a batch: rows of different lengths, so padded
            training={"max_steps": 4, "batch_size": 8, "learning_rate": 5e-3, "max_length": 128},
            eval={"every_steps": 2, "patience": None, "log_every_steps": 1},
            preference={
                "reward_model": str(reward_run),
                "group_size": 4,
                "max_new_tokens": 8,
                "kl_beta": 0.05,
            },
            retention={"suite": "none"},
            output={"dir": str(rl_run)},
        ),
        tmp_path / "rl.yaml",
    )
    assert any(grouped)  # training forwards took the grouped path (the policy's, with gradients)
    metrics = [json.loads(line) for line in (rl_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2, 3, 4]
    assert all("kl" in m for m in metrics if "reward" in m)
    record = json.loads((rl_run / "run.json").read_text())
    assert record["status"] == "finished" and record["method"] == "rl"
    win = record["outcome"]["win_rate"]
    assert win["n"] >= 1 and 0 <= win["ci95"][0] <= win["win_rate"] <= win["ci95"][1] <= 1
    judged = json.loads((rl_run / "win_rate.json").read_text())
    assert len(judged["items"]) == win["n"] and {"tuned_reward", "start_reward"} <= set(
        judged["items"][0]
    )


def test_rl_without_a_reward_model_is_a_config_error(cli, tiny_recipe, tmp_path):
    data = _toy_preferences(tmp_path / "prefs.jsonl", 8)
    recipe = tiny_recipe(method="rl", data={"train": [str(data)]}, retention={"suite": "none"})
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(recipe))
    code, _, err = cli("train", tmp_path / "rl.yaml", "--no-progress")
    assert code == 2 and "preference.reward_model" in err
