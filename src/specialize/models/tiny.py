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


# A chat template that reads content parts ({"type": "image"} / {"type": "text"}), as VLMs' do.
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_llava(out_dir: str | Path, tokenizer_dir: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random LLaVA (CLIP vision tower, projector, tiny Llama) with its processor:
    the tokenizer of `tokenizer_dir` plus an <image> token, a CLIP image processor at 32x32."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    text = tiny_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    images = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which "default" drops again
        chat_template=VLM_CHAT_TEMPLATE,
    )
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


WHISPER_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
_TINY_WHISPER_CORPUS = (
    "what is my balance please transfer money to my savings account at Nordvik bank "
    "ten of clubs four queen of hearts he might even have been made amiable himself "
    "how do I block my card what are the fees for a loan open an account today"
)


def save_tiny_whisper(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random Whisper (d_model 64, 2+2 layers) with a byte-level BPE tokenizer
    trained here on a few sentences, Whisper's special tokens in Whisper's order; save it with
    its processor to `out_dir`. Nothing is downloaded."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    from specialize.models.whisper import whisper_feature_extractor, whisper_generation_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=WHISPER_SPECIAL_TOKENS,
    )
    bpe.train_from_iterator([_TINY_WHISPER_CORPUS] * 4, trainer)
    # Whisper puts the special tokens after the ordinary ones.
    plain = {t: i for t, i in bpe.get_vocab().items() if t not in WHISPER_SPECIAL_TOKENS}
    vocab = {t: n for n, (t, _) in enumerate(sorted(plain.items(), key=lambda kv: kv[1]))}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _merges(bpe)]
    rebuilt = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    rebuilt.pre_tokenizer = bpe.pre_tokenizer
    rebuilt.decoder = bpe.decoder
    rebuilt.add_special_tokens(WHISPER_SPECIAL_TOKENS)
    rebuilt.save(str(out / "tokenizer.json"))
    tokenizer = WhisperTokenizer(tokenizer_file=str(out / "tokenizer.json"))
    tokenizer.pad_token = "<|endoftext|>"
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = whisper_generation_config(config, tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor(whisper_feature_extractor(80), tokenizer).save_pretrained(out)
    return out


def _merges(tokenizer) -> list:
    import json

    return json.loads(tokenizer.to_str())["model"]["merges"]
