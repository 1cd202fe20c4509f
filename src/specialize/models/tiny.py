"""Tiny random models with a real tokenizer, for tests and quick experiments.

Same architecture family as the default (Llama), hidden size <= 64 and 2 layers, so a training
step takes milliseconds while tokenisation and chat templates are the real ones.
"""

from __future__ import annotations

from pathlib import Path


def tiny_llama_config(vocab_size: int, **overrides):
    """Return a LlamaConfig small enough for unit tests."""
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def save_tiny_model(
    out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int = 0, **overrides
) -> Path:
    """Build a tiny random Llama using the tokenizer in `tokenizer_dir`; save both to `out_dir`."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
