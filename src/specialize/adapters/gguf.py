"""GGUF out: a Llama-family model (F16 or Q8_0), a LoRA adapter in llama.cpp's LoRA-GGUF layout,
and an Ollama Modelfile that ties a base GGUF, an adapter GGUF and the chat template together.

Written with the `gguf` package the way llama.cpp's convert_hf_to_gguf.py and
convert_lora_to_gguf.py write a Llama: tensor names from gguf's name map, q/k rows permuted into
llama.cpp's rotary layout, 1-D tensors (norms) in F32, the tokenizer as a GPT-2 BPE vocabulary
with its merges, special tokens and chat template. Only the Llama architecture (SmolLM2, Llama,
Mistral-style configs without rope scaling) is supported; anything else is refused with the reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from specialize.errors import ModelError, UserFileError

QUANTS = ("f16", "q8_0")
CHATML_OLLAMA_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def write_model_gguf(model_dir: str | Path, out_file: str | Path, quant: str = "f16") -> Path:
    """Write the Hugging Face Llama model in `model_dir` as one GGUF file; return its path."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    model_dir, out_file = Path(model_dir), Path(out_file)
    if quant not in QUANTS:
        raise UserFileError(f"--quant {quant!r}", fix=f"use one of {', '.join(QUANTS)}")
    config = _llama_config(model_dir)
    qtype = {
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[quant]
    file_type = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[quant]
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.name)
    _hyperparameters(writer, config)
    writer.add_file_type(file_type)
    _vocabulary(writer, model_dir, config)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError("no .safetensors weights", where=str(model_dir))
    for file in files:
        with safe_open(file, "pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue
                data = _permuted(name, weights.get_tensor(name).float(), config).numpy()
                target = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise ModelError(f"tensor {name!r} has no GGUF name for llama", where=str(file))
                if data.ndim == 1 or data.shape[-1] % 32:
                    writer.add_tensor(target, data.astype(np.float32))
                elif qtype == gguf.GGMLQuantizationType.F16:
                    writer.add_tensor(target, data.astype(np.float16))
                else:
                    packed = gguf.quants.quantize(data, qtype)  # uint8 rows of blocks
                    writer.add_tensor(target, packed, raw_dtype=qtype)
    _finish(writer)
    return out_file


def write_lora_gguf(adapter_dir: str | Path, base_dir: str | Path, out_file: str | Path) -> Path:
    """Write a PEFT LoRA adapter in llama.cpp's LoRA-GGUF layout (F32); return its path.

    Each target becomes `<gguf name>.lora_a` (r x in) and `.lora_b` (out x r); q/k B rows are
    permuted like the base weights. llama.cpp scales by alpha / r, so an rsLoRA adapter
    (alpha / sqrt(r)) is written with alpha * sqrt(r).
    """
    import gguf
    import numpy as np
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    config = _llama_config(Path(base_dir))
    lora = json.loads((adapter_dir / "adapter_config.json").read_text())
    if lora.get("peft_type", "LORA") != "LORA" or lora.get("use_dora"):
        raise ModelError(
            "only plain LoRA adapters have a LoRA-GGUF layout (not DoRA or other PEFT types)",
            where=str(adapter_dir),
            fix="export --format gguf (merged) instead",
        )
    alpha = float(lora["lora_alpha"])
    if lora.get("use_rslora"):
        alpha *= math.sqrt(lora["r"])
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as weights:
        for name in sorted(weights.keys()):
            part = "a" if ".lora_A." in name else "b" if ".lora_B." in name else None
            if part is None:
                raise ModelError(
                    f"tensor {name!r} is not a LoRA A or B matrix (modules_to_save?)",
                    where=str(adapter_dir),
                    fix="export --format gguf (merged) instead",
                )
            base_name = (
                name.removeprefix("base_model.model.")
                .replace(".lora_A.weight", ".weight")
                .replace(".lora_B.weight", ".weight")
            )
            data = weights.get_tensor(name).float()
            if part == "b":
                data = _permuted(base_name, data, config)
            target = names.get_name(base_name, try_suffixes=(".weight",))
            if target is None:
                raise ModelError(f"no GGUF name for {base_name!r}", where=str(adapter_dir))
            writer.add_tensor(f"{target}.lora_{part}", data.numpy().astype(np.float32))
    _finish(writer)
    return Path(out_file)


def write_modelfile(
    folder: Path, model_file: str, adapter_file: str | None, tokenizer, parameters: dict
) -> Path:
    """Write an Ollama Modelfile: FROM the model GGUF, ADAPTER, TEMPLATE, stop tokens, parameters."""
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template:
        raise ModelError(
            "this chat template is not ChatML, and only ChatML is translated to an Ollama TEMPLATE",
            fix="export --format gguf and write the Modelfile's TEMPLATE yourself",
        )
    lines = [
        "# Written by `specialize adapters export --format ollama`; run: ollama create NAME -f Modelfile",
        f"FROM ./{model_file}",
    ]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    lines.append(f'TEMPLATE """{CHATML_OLLAMA_TEMPLATE}"""')
    system = _default_system(tokenizer)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for stop in ("<|im_end|>", "<|im_start|>"):
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in parameters.items():
        lines.append(f"PARAMETER {key} {value}")
    path = folder / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _default_system(tokenizer) -> str | None:
    """The system prompt the template adds when a conversation has none (SmolLM2 does)."""
    marker = "<|im_start|>system\n"
    probe = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    if not probe.startswith(marker):
        return None
    return probe[len(marker) :].split("<|im_end|>", 1)[0]


# --- helpers -------------------------------------------------------------------------------


def _llama_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelError("no config.json", where=str(model_dir))
    config = json.loads(path.read_text())
    if config.get("model_type") != "llama":
        raise ModelError(
            f"GGUF export writes the llama architecture; this model is {config.get('model_type')!r}",
            where=str(path),
        )
    if config.get("rope_scaling"):
        raise ModelError("rope scaling is not written to GGUF yet", where=str(path))
    return config


def _hyperparameters(writer, config: dict) -> None:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_vocab_size(config["vocab_size"])


def _vocabulary(writer, model_dir: Path, config: dict) -> None:
    """The tokenizer as llama.cpp's convert_hf_to_gguf writes a GPT-2 style BPE vocabulary."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if (
        not tokenizer.is_fast
        or json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"] != "BPE"
    ):
        raise ModelError("GGUF export writes byte-level BPE tokenizers only", where=str(model_dir))
    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(config["vocab_size"]):
        token = reverse.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(
                gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED
            )
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(model_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)


def _pre_tokenizer(model_dir: Path) -> str:
    """llama.cpp's pre-tokenizer name: copied from the GGUF the model came from, else "default".

    (convert_hf_to_gguf.py recognises tokenizers by hashing their output on a probe text; we only
    know the name when the base itself came from a GGUF, as the default model does.)
    """
    marker = model_dir / "specialize-model.json"
    if marker.is_file():
        origin = json.loads(marker.read_text()).get("gguf")
        if origin and Path(origin).is_file():
            from gguf import GGUFReader

            field = GGUFReader(origin).fields.get("tokenizer.ggml.pre")
            if field is not None:
                return field.contents()
    return "default"


def _permuted(name: str, data, config: dict):
    """Rows of q_proj/k_proj reordered for llama.cpp's rotary embedding (as convert_hf_to_gguf)."""
    heads = config["num_attention_heads"]
    if name.endswith("self_attn.q_proj.weight"):
        return _permute(data, heads)
    if name.endswith("self_attn.k_proj.weight"):
        return _permute(data, config.get("num_key_value_heads", heads))
    return data


def _permute(weights, heads: int):
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
