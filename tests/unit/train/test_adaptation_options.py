"""PEFT options: DoRA, rsLoRA, LoRA+, PiSSA (converted at save), and the CUDA-only paths refused on CPU.

One tiny training run through the CLI covers DoRA + rsLoRA + LoRA+ together; the rest is unit-sized.
fp16 and QLoRA on CUDA are not run here (no GPU in the test environment).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from specialize.errors import ConfigError, TrainingError
from specialize.train.adaptation import adapt, convert_initialised_adapter, loraplus_optimizer
from specialize.train.config import AdaptationSection, RecipeConfig

IDS = torch.tensor([[1, 520, 2001, 3000, 45, 9]])


def _base(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_dora_rslora_and_loraplus_train_through_the_cli(cli, tiny_recipe, tmp_path):
    recipe = tiny_recipe(
        adaptation={
            "kind": "lora",
            "lora": {
                "r": 4,
                "alpha": 8,
                "use_dora": True,
                "use_rslora": True,
                "loraplus_lr_ratio": 16,
            },
        },
        training={"max_steps": 3, "batch_size": 4, "learning_rate": 5e-3, "max_length": 128},
        retention={"suite": "none"},
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, out, err = cli("train", path, "--no-progress", "--json")
    assert code == 0, err
    assert json.loads(out)["outcome"]["result_dir"].endswith("adapter")
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True
    from safetensors import safe_open

    with safe_open(tmp_path / "run" / "adapter" / "adapter_model.safetensors", "pt") as weights:
        assert any("lora_magnitude_vector" in k for k in weights.keys())  # noqa: SIM118


def test_loraplus_gives_b_matrices_a_larger_learning_rate(tiny_model_dir):
    recipe = RecipeConfig.model_validate(
        {
            "model": str(tiny_model_dir),
            "method": "sft",
            "data": {"train": ["x.jsonl"]},
            "adaptation": {"lora": {"r": 4, "loraplus_lr_ratio": 8}},
            "training": {"learning_rate": 1e-3},
        }
    )
    model = adapt(_base(tiny_model_dir), recipe.adaptation)
    optimizer = loraplus_optimizer(model, recipe)
    rates = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rates[names[id(parameter)]] = group["lr"]
    a = [lr for n, lr in rates.items() if "lora_A" in n]
    b = [lr for n, lr in rates.items() if "lora_B" in n]
    assert set(a) == {1e-3} and set(b) == {8e-3}


def test_pissa_adapter_is_saved_as_plain_lora_on_the_unchanged_base(tiny_model_dir, tmp_path):
    from peft import PeftModel

    base_logits = _base(tiny_model_dir)(IDS).logits
    section = AdaptationSection(lora={"r": 4, "alpha": 8, "init": "pissa"})
    model = adapt(_base(tiny_model_dir), section).eval()
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits, base_logits, atol=1e-5)  # PiSSA starts at the base
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.01 * torch.randn_like(parameter))  # stands in for training
        trained = model(IDS).logits
    model.save_pretrained(tmp_path / "adapter")
    convert_initialised_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8  # rank 2r after conversion
    plain = PeftModel.from_pretrained(_base(tiny_model_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(plain(IDS).logits, trained, atol=1e-4)
        assert not torch.allclose(trained, base_logits, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusals")
def test_cuda_only_paths_are_refused_on_cpu_with_the_fix(tiny_model_dir):
    from specialize.train.precision import choose_precision

    with pytest.raises(TrainingError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16")
    assert choose_precision("auto").name in ("bf16", "fp32")
    with pytest.raises(TrainingError, match="qlora needs a CUDA GPU"):
        adapt(_base(tiny_model_dir), AdaptationSection(kind="qlora"))
    with pytest.raises(ValueError, match="kind: qlora"):
        AdaptationSection(lora={"init": "loftq"})


def test_recipe_errors_name_the_option(tmp_path):
    from specialize.config import load_config

    path = tmp_path / "r.yaml"
    path.write_text(
        "method: sft\ndata: {train: [x.jsonl]}\nadaptation: {lora: {loraplus_lr_ratio: -1}}\n"
    )
    with pytest.raises(ConfigError, match="loraplus_lr_ratio"):
        load_config(RecipeConfig, path)
