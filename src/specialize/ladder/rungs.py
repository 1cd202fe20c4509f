"""What the ladder's rungs run on, shared with simulations: tuned adapters named by a spec
(`NAME=PATH` or a run / adapter folder) and the base model with every adapter attached, loaded on
first use only."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from specialize.artifacts import RunRecord
from specialize.evaluate.skew import TrainingFormat, run_dir_of
from specialize.models.loading import adapter_dir, content_hash


@dataclass
class Adapter:
    name: str
    path: Path  # the PEFT adapter folder
    content_hash: str
    training_seconds: float | None  # from the run record, when the adapter came from a run
    source: Path | None = None  # the run or adapter directory the config named
    raft: dict | None = None  # the run's data.raft: tuned+rag then shows context as it trained
    training: TrainingFormat | None = None  # the layout of its training rows (skew check)


def adapter_from_spec(spec: str) -> Adapter:
    """The adapter a spec names: `NAME=PATH`, or a PATH (named after its run or folder)."""
    name, sep, path = spec.partition("=")
    source = Path(path if sep else spec).expanduser()
    folder = adapter_dir(source)
    record = source / "run.json"
    seconds = RunRecord.read(record).duration_s if record.is_file() else None
    label = (
        name if sep else (source.name if folder != source else folder.parent.name or folder.name)
    )
    return Adapter(label, folder, content_hash(folder), seconds, source, _raft_of(source))


def _raft_of(source: Path) -> dict | None:
    """The data.raft settings of the run an adapter came from (None when it trained without)."""
    import yaml

    run = run_dir_of(source)
    config = run / "config.yaml" if run else None
    if config is None or not config.is_file():
        return None
    return ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("raft")


class LazyModels:
    """The base model with every adapter attached, loaded on first use only."""

    def __init__(self, model_ref: str, adapters: list[Adapter]):
        self.model_ref = model_ref
        self.adapters = {a.name: a for a in adapters}
        self._loaded = None

    def get(self, adapter: Adapter | None):
        """(model, tokenizer, context): inside `context` the model answers as `adapter` (None: the base)."""
        if self._loaded is None:
            self._loaded = self._load()
        model, tokenizer = self._loaded
        if not self.adapters:
            return model, tokenizer, nullcontext()
        if adapter is None:
            return model, tokenizer, model.disable_adapter()
        model.set_adapter(adapter.name)
        return model, tokenizer, nullcontext()

    def _load(self):
        from peft import PeftModel

        from specialize.models.loading import load_model

        model, tokenizer = load_model(self.model_ref)
        for index, adapter in enumerate(self.adapters.values()):
            if index == 0:
                model = PeftModel.from_pretrained(model, adapter.path, adapter_name=adapter.name)
            else:
                model.load_adapter(adapter.path, adapter_name=adapter.name)
        model.eval()
        return model, tokenizer
