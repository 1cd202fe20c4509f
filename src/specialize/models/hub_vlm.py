"""A transformers vision-language model from a local directory (LLaVA, Idefics3/SmolVLM, Qwen2-VL).

The recipe's `model:` may be such a model instead of a text LM: it then brings its own vision
tower, projector and processor, and `specialize` trains LoRA on its language model and its
projector, with the same rows, stages, run directory and registry as our own VLM.
"""

from __future__ import annotations

import json
from pathlib import Path


def is_hub_vlm(path: str | Path) -> bool:
    """Return whether a model directory holds a vision-language model (a vision and a text config)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    body = json.loads(config.read_text())
    return "vision_config" in body and "text_config" in body
