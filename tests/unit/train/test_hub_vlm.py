"""A transformers VLM (a tiny random LLaVA, built locally) goes through the vision recipe.

One run at module scope: LoRA on the language model and the projector move, the vision tower and
the language model's own weights do not; the adapter carries the projector, reloads to the same
answers and answers image items through `specialize eval`.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specialize.train.config import RecipeConfig
from tests.unit.train.test_vision_train import CARDS, card_rows, vision_recipe


@pytest.fixture(scope="module")
def tiny_llava(tiny_model_dir, tmp_path_factory) -> Path:
    from specialize.models.tiny import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), tiny_model_dir, seed=0)


def hub_recipe(tiny_llava: Path, folder: Path) -> RecipeConfig:
    return vision_recipe(tiny_llava, folder, {"align_steps": 2}, train_rows=8, max_steps=3)


@pytest.fixture(scope="module")
def trained(tiny_llava, tmp_path_factory):
    """Train once; keep the in-memory PEFT model (a spy on get_peft_model) and its start."""
    import peft

    from specialize.adapters.registry import register_finished
    from specialize.train.run import train

    folder = tmp_path_factory.mktemp("hub-vlm-run")
    recipe = hub_recipe(tiny_llava, folder)
    built = {}
    original = peft.get_peft_model

    def spy(model, config, *args, **kwargs):
        tuned = original(model, config, *args, **kwargs)
        built["model"] = tuned
        built["start"] = {k: v.detach().clone() for k, v in tuned.named_parameters()}
        return tuned

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPECIALIZE_HOME", str(folder / "home"))
        patch.setattr(peft, "get_peft_model", spy)
        run = train(recipe, progress=False)
        register_finished(run.path)
    return run, built, folder / "home"


def test_lora_and_projector_moved_vision_tower_and_language_model_did_not(trained):
    _, built, _ = trained
    after = dict(built["model"].named_parameters())
    moved = {k for k, v in built["start"].items() if not torch.equal(v, after[k].detach())}
    assert any("lora_B" in k and "language_model" in k for k in moved)
    assert any("multi_modal_projector.modules_to_save" in k for k in moved)
    assert not any("vision_tower" in k for k in moved)
    assert all("lora_" in k or "modules_to_save" in k for k in moved), sorted(moved)[:5]
    assert not any("lora_" in k and "vision_tower" in k for k in after)  # LoRA on the LM only


def test_stages_and_adapter_files(trained):
    run, built, _ = trained
    stages = [m["stage"] for m in run.metrics() if "loss" in m]
    assert stages == ["align"] * 2 + ["joint"] * 3
    adapter = run.adapter
    vision = json.loads((adapter / "vision.json").read_text())
    assert vision["kind"] == "hub" and vision["model_class"] == "LlavaForConditionalGeneration"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("multi_modal_projector" in k for k in saved)
    assert any("lora_A" in k for k in saved)
    assert (adapter / "processor_config.json").is_file() or (
        adapter / "preprocessor_config.json"
    ).is_file()
    checkpoint = load_file(str(run.checkpoints / "checkpoint-4" / "trainable.safetensors"))
    assert any("multi_modal_projector.modules_to_save" in k for k in checkpoint)  # resumable
    assert any("lora_B" in k for k in checkpoint)
    record = run.record()
    assert record.status == "finished" and record.adapter_name
    assert (run.path / "report.html").is_file()


def test_reloaded_adapter_answers_an_image_like_the_trained_model(trained, tiny_llava):
    from specialize.data.media import load_image
    from specialize.models.hub_vlm import chat_parts, encode, hub_answers, load_hub_adapter

    run, built, _ = trained
    model, processor = load_hub_adapter(str(tiny_llava), run.adapter)
    prompt = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which card?"}]}
    ]
    picture = load_image(str(next(iter(sorted((CARDS / "images").glob("*.png"))))))
    batch = encode(processor, chat_parts(prompt), [picture], generation=True)
    outputs = []
    for vlm in (model, built["model"].eval()):
        with torch.no_grad():
            outputs.append(vlm.generate(**batch, max_new_tokens=6, do_sample=False))
    assert outputs[0].shape[1] > batch["input_ids"].shape[1]  # it answered
    assert torch.equal(outputs[0], outputs[1])
    with torch.no_grad():
        logits = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
    assert not torch.allclose(logits, base)  # the adapter (LoRA + projector) changes the answer
    assert hub_answers(model, processor, [prompt], [[picture]], max_new_tokens=6) == hub_answers(
        built["model"], processor, [prompt], [[picture]], max_new_tokens=6
    )


def test_cli_eval_scores_the_hub_vlm_on_image_items(
    trained, tiny_llava, tmp_path, cli, monkeypatch
):
    run, _, home = trained
    monkeypatch.setenv("SPECIALIZE_HOME", str(home))
    data = card_rows("test", 4, tmp_path)
    out = tmp_path / "eval.json"
    code, stdout, err = cli(
        "eval",
        "--model",
        tiny_llava,
        "--adapter",
        run.path,
        "--data",
        data,
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {"tuned", "text_only", "blind"}
    assert all(s["n"] == 4 for s in report["summary"].values())
    assert all(isinstance(i["tuned"]["output"], str) for i in report["items"])


class Killed(Exception):
    """Stands for a kill right after a checkpoint was written."""


def test_interrupted_hub_vlm_run_resumes_to_the_same_weights(
    trained, tiny_llava, tmp_path, monkeypatch
):
    from specialize.train import vision as loop
    from specialize.train.run import resume, train

    reference, _, home = trained
    monkeypatch.setenv("SPECIALIZE_HOME", str(home))
    original = loop.save_checkpoint

    def save_then_die(run, setup, state, *args):
        original(run, setup, state, *args)
        if state.step == 4:  # in the joint stage
            raise Killed

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(hub_recipe(tiny_llava, tmp_path), progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", original)
    run = resume(tmp_path / "run", progress=False)
    ours = load_file(str(run.adapter / "adapter_model.safetensors"))
    theirs = load_file(str(reference.adapter / "adapter_model.safetensors"))
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.allclose(ours[key], theirs[key], atol=1e-6, rtol=1e-5), key
