"""One base model in memory with any number of registered adapters on it (PEFT multi-adapter),
switched per request without reloading the base. The base alone stays reachable as "base".

`chat`/`complete` here answer one request at a time: the active adapter is state of the one model
object, so they hold a lock from switching to the last token and requests for different adapters
can never mix. The server batches instead: `adapters/engine.py` takes the same lock for each
decoding step and names every row's adapter in the forward, so loading or unloading an adapter
waits between steps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from specialize.adapters import registry as adapters
from specialize.errors import ModelError, NotFoundError
from specialize.evaluate.skew import TrainingFormat, check_skew, training_format
from specialize.models.generation import GenerationSettings, render_prompt_ids, stream_reply

BASE = "base"
log = logging.getLogger(__name__)


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length", as OpenAI names them


class ModelHost:
    def __init__(self, model_ref: str, adapter_names: list[str] = ()):
        from specialize.models.loading import content_hash, load_model, resolve_model

        resolved = resolve_model(model_ref)
        self.model_ref = model_ref
        self.base_hash = content_hash(resolved.path)
        self.model, self.tokenizer = load_model(resolved)
        self.adapters: dict[str, dict] = {}
        # Per adapter: its training rows' layout, and the last request layout that differed from it.
        self.formats: dict[str, TrainingFormat] = {}
        self.format_warnings: dict[str, dict] = {}
        self.vision: dict = {}  # adapter name -> VisionLM (projector, spec) for image requests
        self._lock = threading.Lock()
        # counts loads and unloads, so the engine knows when to restack the LoRA weights
        self.revision = 0
        for name in adapter_names:
            self.load(name)

    # --- adapters -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    def load(self, name: str) -> dict:
        """Load a registered adapter by name (never by a path from a request)."""
        from peft import PeftModel

        entry = adapters.get(name)
        if entry.get("method") == "reward":
            raise ModelError(
                f"adapter {name!r} is a reward model: it scores answers, it does not write them"
            )
        if entry["base_hash"] != self.base_hash:
            raise ModelError(
                f"adapter {name!r} was trained on another base ({entry['base_model']}, "
                f"{entry['base_hash'][:12]}), not on the served {self.model_ref} ({self.base_hash[:12]})",
                fix="serve it with its own base model",
            )
        with self._lock:
            if name in self.adapters:
                return entry
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(entry["path"], adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, entry["path"], adapter_name=name)
            self.model.eval()
            self.adapters[name] = entry
            self.revision += 1
            self.formats[name] = training_format(entry["path"], self.model_ref)
            self._load_vision(name, entry["path"])
        return entry

    def _load_vision(self, name: str, path: str) -> None:
        """A vision adapter's projector, with one frozen encoder shared by all of them."""
        from specialize.models.vision import is_vision_adapter, load_vision_adapter

        if not is_vision_adapter(path):
            return
        vlm = load_vision_adapter(self.model, self.tokenizer, path)
        self.encoder = getattr(self, "encoder", None) or vlm.encoder
        self.vision[name] = vlm

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self.adapters:
                raise NotFoundError(
                    f"adapter {name!r} is not loaded",
                    fix=f"loaded: {', '.join(self.adapters) or 'none'}",
                )
            others = [n for n in self.adapters if n != name]
            if others:
                self.model.set_adapter(others[0])  # PEFT cannot delete the active adapter
            self.model.delete_adapter(name)
            del self.adapters[name]
            self.revision += 1
            self.formats.pop(name, None)
            self.format_warnings.pop(name, None)
            self.vision.pop(name, None)

    @contextlib.contextmanager
    def selected(self, name: str):
        """Hold the model with `name` active (base: adapters disabled) until the block ends."""
        if name != BASE and name not in self.adapters:
            raise NotFoundError(
                f"model {name!r} is not served", fix=f"use one of: {', '.join(self.names())}"
            )
        with self._lock:
            if not self.adapters:
                yield self.model
            elif name == BASE:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(name)
                yield self.model

    # --- generation -----------------------------------------------------------------------

    def check_format(self, name: str, prompt: list[dict] | str) -> dict | None:
        """Compare a request's layout with the adapter's training rows; warn once per new mismatch."""
        training = self.formats.get(name)
        if training is None or training.layout is None:
            return None
        check = check_skew(
            self.adapters[name]["path"], [prompt], self.model_ref, training=training, warn=False
        )
        if not check.skewed:
            return None
        result = check.as_dict()
        previous = self.format_warnings.get(name)
        if previous is None or previous["mismatches"] != result["mismatches"]:
            log.warning(check.warning())
        result["requests_skewed"] = (previous or {}).get("requests_skewed", 0) + 1
        self.format_warnings[name] = result
        return result

    def chat(self, name: str, messages: list[dict], settings: GenerationSettings) -> Reply:
        self.check_format(name, messages)
        return self._generate(name, render_prompt_ids(self.tokenizer, messages), settings)

    def complete(self, name: str, prompt: str, settings: GenerationSettings) -> Reply:
        self.check_format(name, prompt)
        return self._generate(name, self.tokenizer(prompt)["input_ids"], settings)

    def _generate(self, name: str, ids: list[int], settings: GenerationSettings) -> Reply:
        import torch

        tensor = torch.tensor([ids])
        with self.selected(name) as model:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=tensor.to(model.device),
                    attention_mask=torch.ones_like(tensor).to(model.device),
                    **settings.to_generate_kwargs(self.tokenizer),
                )
        new = out[0, len(ids) :].tolist()
        ended = bool(new) and new[-1] == self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= settings.max_new_tokens and not ended else "stop"
        return Reply(text, len(ids), len(new), finish)

    def chat_with_images(
        self, name: str, messages: list[dict], images: list, settings: GenerationSettings
    ) -> Reply:
        """Answer a chat whose {"type": "image"} parts take `images`, with a vision adapter."""
        import torch

        from specialize.models.vision import VisionLM, render_prompt

        if name not in self.vision:
            raise ModelError(
                f"model {name!r} does not take images",
                fix=f"use a vision adapter: {', '.join(self.vision) or 'none is loaded'}",
            )
        held = self.vision[name]
        ids = render_prompt(self.tokenizer, messages, held.spec.placeholder, held.spec.image_tokens)
        tensor = torch.tensor([ids])
        with self.selected(name) as model:
            vlm = VisionLM(self.encoder, held.projector, model, held.spec, held.placeholder_id)
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                features = vlm.image_features(images)
                new = vlm.generate(
                    tensor.to(model.device),
                    torch.ones_like(tensor).to(model.device),
                    features,
                    **settings.to_generate_kwargs(self.tokenizer),
                )[0].tolist()
        ended = bool(new) and new[-1] == self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= settings.max_new_tokens and not ended else "stop"
        return Reply(text, len(ids), len(new), finish)

    def stream_chat(
        self, name: str, messages: list[dict], settings: GenerationSettings
    ) -> Iterator[str]:
        """Yield text pieces; the adapter stays selected until the stream ends or is closed."""
        self.check_format(name, messages)
        with self.selected(name) as model:
            yield from stream_reply(model, self.tokenizer, messages, settings)

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(render_prompt_ids(self.tokenizer, messages))
