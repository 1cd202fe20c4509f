"""Base and tuned answers to a few validation chats of a run's own data, for its report."""

from __future__ import annotations

from specialize.artifacts import atomic_write_json
from specialize.evaluate.evaluation import load_for_eval
from specialize.evaluate.runner import generate_batch
from specialize.models.generation import GenerationSettings
from specialize.track.report import SAMPLES_FILE
from specialize.track.rundir import RunDir


def write_samples(model_ref: str, run: RunDir, rows: list[dict], *, count: int = 3) -> None:
    """Record base and tuned answers to the first few validation chats (for the report)."""
    chats = [
        r["messages"]
        for r in rows
        if r.get("messages") and r["messages"][-1]["role"] == "assistant"
    ][:count]
    if not chats:
        return
    loaded = load_for_eval(model_ref, run.path)
    prompts = [m[:-1] for m in chats]
    settings = GenerationSettings(max_new_tokens=96)
    tuned = generate_batch(loaded.model, loaded.tokenizer, prompts, settings)
    if loaded.base_model is not None:
        base = generate_batch(loaded.base_model, loaded.tokenizer, prompts, settings)
    else:
        with loaded.model.disable_adapter():
            base = generate_batch(loaded.model, loaded.tokenizer, prompts, settings)
    items = [
        {"question": p[-1]["content"], "reference": m[-1]["content"], "base": b, "tuned": t}
        for p, m, b, t in zip(prompts, chats, base, tuned, strict=True)
    ]
    atomic_write_json(run.path / SAMPLES_FILE, {"items": items})
