"""Training through the real entry point: run directory, plain-PEFT loading, resume after a kill, NaN stop, DDP."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from specialize.track import registry

SPECIALIZE = str(Path(sys.executable).with_name("specialize"))


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text("# Run: specialize train THIS_FILE\n" + yaml.safe_dump(recipe))
    return path


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_run_directory_and_registry(cli, tiny_recipe, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe())
    code, out, err = cli("train", recipe, "--set", "training.epochs=1", "--no-progress")
    assert code == 0, err
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "env.json",
        "run.json",
        "metrics.jsonl",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/chat_template.jinja",
    ):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 1
    env = json.loads((run / "env.json").read_text())
    assert (
        env["seed"] == 7 and env["precision"]["name"] in ("bf16", "fp32") and env["packages"]["trl"]
    )
    assert "commit" in (env["git"] or {"commit": None})
    record = json.loads((run / "run.json").read_text())
    assert record["data"][0]["outputs"]["train"] and record["outcome"]["stop_reason"].startswith(
        "finished"
    )
    metric = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(metric)
    assert any(
        "val_loss" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    )
    (row,) = registry.list_runs()
    assert (
        row["status"] == "finished"
        and row["method"] == "sft"
        and len(row["base_hash"]) == 64
        and row["data_hash"]
    )
    assert "chosen: checkpoint-" in out


def test_adapter_loads_in_plain_peft_with_the_same_logits(
    cli, tiny_recipe, tmp_path, tiny_model_dir
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from specialize.models.loading import load_model

    code, _, err = cli("train", write_recipe(tmp_path / "r.yaml", tiny_recipe()), "--no-progress")
    assert code == 0, err
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "run" / "adapter"
    ).eval()
    ours, tokenizer = load_model(str(tiny_model_dir), adapter=tmp_path / "run")
    ids = torch.tensor([tokenizer("How do I block my card?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, ours(ids).logits, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    assert not torch.allclose(base, ours(ids).logits, atol=1e-4)  # the adapter does something


def test_killed_run_resumes_on_the_same_loss_curve(cli, tiny_recipe, tmp_path, home):
    settings = {
        "training": {"max_steps": 24, "learning_rate": 5e-3},
        "eval": {"every_steps": 3, "patience": None},
    }
    code, _, err = cli(
        "train",
        write_recipe(
            tmp_path / "a.yaml", tiny_recipe(**settings, output={"dir": str(tmp_path / "a")})
        ),
        "--no-progress",
    )
    assert code == 0, err
    killed = tmp_path / "b"
    recipe_b = write_recipe(
        tmp_path / "b.yaml", tiny_recipe(**settings, output={"dir": str(killed)})
    )
    env = {**os.environ, "SPECIALIZE_HOME": str(home)}
    proc = subprocess.Popen(
        [SPECIALIZE, "train", str(recipe_b), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed / "checkpoints" / "checkpoint-9" / "specialize-checkpoint.json"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never reached checkpoint-9"
    assert not (killed / "adapter").exists(), "killed too late: the run had finished"
    code, _, err = cli("train", "--resume", killed, "--no-progress")
    assert code == 0, err
    expected, resumed = losses(tmp_path / "a"), losses(killed)
    assert sorted(resumed) == sorted(expected) == list(range(1, 25))
    for step in expected:
        assert math.isclose(resumed[step], expected[step], rel_tol=1e-4), (
            step,
            resumed[step],
            expected[step],
        )


def test_absurd_learning_rate_stops_on_nan_and_keeps_the_last_good_checkpoint(
    cli, tiny_recipe, tmp_path
):
    recipe = tiny_recipe(
        training={
            "learning_rate": 1e30,
            "max_steps": 40,
            "precision": "fp32",
            "max_grad_norm": 1e9,
        },
        eval={"every_steps": 1, "patience": None},
    )
    code, _, err = cli("train", write_recipe(tmp_path / "r.yaml", recipe), "--no-progress")
    last = err.strip().splitlines()[-1]
    assert (
        code == 1
        and last.startswith("error:")
        and "non-finite" in last
        and "lower training.learning_rate" in last
    ), err
    assert "Traceback" not in err
    run = tmp_path / "run"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["outcome"]["nonfinite"]
    kept = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert kept, "the last good checkpoint must be kept"
    from safetensors.torch import load_file

    for checkpoint in kept:
        assert (checkpoint / "specialize-checkpoint.json").is_file()
        weights = load_file(str(checkpoint / "adapter_model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_two_cpu_processes_train_one_adapter(tiny_recipe, tmp_path, home):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        tiny_recipe(training={"max_steps": 8, "batch_size": 2}, eval={"every_steps": 4}),
    )
    env = {**os.environ, "SPECIALIZE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "specialize.cli.main",
        "train",
        str(recipe),
        "--no-progress",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file() and (
        run / "adapter" / "adapter_model.safetensors"
    ).is_file()
    curve = list(losses(run).values())
    assert sum(curve[-2:]) < sum(curve[:2]), curve
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
