"""What each rung puts in front of the model for one eval item.

base, tuned   the item's own messages (as in training)
prompt        the task's engineered system prompt, plus the most similar training examples
              as earlier turns (from training rows with the item's own system prompt; when no
              training row shares it, the nearest rows regardless of system prompt, recorded)
rag           the engineered system prompt plus retrieved document chunks
tuned+rag     the item's own messages, its system prompt extended with retrieved chunks
"""

from __future__ import annotations

from dataclasses import dataclass

from specialize.data.formats import read_rows
from specialize.data.retrieval import EXCERPTS_HEADER, BM25Index, DocumentRetriever, with_excerpts
from specialize.evaluate.tasks import EvalItem
from specialize.ladder.config import TaskConfig

__all__ = ["EXCERPTS_HEADER", "ExamplePool", "RungPrompts", "question_of"]


@dataclass(frozen=True)
class Example:
    system: str
    user: str
    assistant: str


class ExamplePool:
    """Training chats, searchable by question, grouped by their system prompt (one per task).

    Rows made by fact augmentation (`generated`) are left out: each repeats an original's answer
    behind a template, so two shots could be one example twice."""

    def __init__(self, path: str):
        rows = [row for row in _values(path) if not row.get("generated")]
        self.examples = [e for e in map(_example, rows) if e is not None]
        self._groups: dict[str, list[int]] = {}
        for index, example in enumerate(self.examples):
            self._groups.setdefault(example.system, []).append(index)
        self._indexes = {
            system: BM25Index([self.examples[i].user for i in members])
            for system, members in self._groups.items()
        }
        self._everyone = BM25Index([e.user for e in self.examples]) if self.examples else None

    def similar(self, question: str, system: str, k: int) -> Shots:
        """The k training examples nearest to question, from rows with the same system prompt.

        When no row shares the system prompt, the nearest rows regardless of it (`fallback`).
        """
        if system in self._groups:
            members = self._groups[system]
            found = [self.examples[members[i]] for i in self._indexes[system].search(question, k)]
            return Shots(found, fallback=False)
        if self._everyone is None:
            return Shots([], fallback=True)
        return Shots([self.examples[i] for i in self._everyone.search(question, k)], fallback=True)


@dataclass(frozen=True)
class Shots:
    examples: list[Example]
    fallback: bool  # True: no training row shares the item's system prompt

    def note(self) -> str:
        if not self.fallback:
            return "same system prompt"
        return (
            "fallback: no training example shares the item's system prompt; "
            "nearest examples regardless of system prompt"
        )


def _values(path: str):
    for raw in read_rows(path):
        if raw.problem is None and isinstance(raw.value, dict):
            yield raw.value


def _example(row: dict) -> Example | None:
    messages = row.get("messages") or []
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not messages or messages[-1].get("role") != "assistant" or not users:
        return None
    return Example(_system_of(messages), str(users[-1]), str(messages[-1]["content"]))


def _system_of(messages: list[dict]) -> str:
    return next((str(m["content"]) for m in messages if m.get("role") == "system"), "")


def question_of(item: EvalItem) -> str:
    """The last user turn of an item: what retrieval and example search look for."""
    return next(str(m["content"]) for m in reversed(item.prompt) if m.get("role") == "user")


@dataclass
class RungPrompts:
    task: TaskConfig
    pool: ExamplePool | None = None
    shots: int = 0
    retriever: DocumentRetriever | None = None
    top_k: int = 3

    def build(self, rung: str, item: EvalItem) -> list[dict]:
        kind = rung.split(":", 1)[0]
        if kind in ("base", "tuned"):
            return list(item.prompt)
        if kind == "prompt":
            return self._few_shot(item)
        if kind == "rag":
            return self._with_excerpts(item, self.task.system or _system_of(item.prompt))
        if kind == "tuned+rag":
            return self._with_excerpts(item, _system_of(item.prompt))
        raise ValueError(f"unknown rung {rung!r}")

    def shots_for(self, item: EvalItem) -> Shots | None:
        """The few-shot examples the prompt rung shows for item; None without a pool."""
        if self.pool is None or not self.shots:
            return None
        return self.pool.similar(question_of(item), _system_of(item.prompt), self.shots)

    def _few_shot(self, item: EvalItem) -> list[dict]:
        own_system = _system_of(item.prompt)
        turns = []
        shots = self.shots_for(item)
        if shots is not None:
            for example in reversed(shots.examples):
                turns += [
                    {"role": "user", "content": example.user},
                    {"role": "assistant", "content": example.assistant},
                ]
        return _replace_system(item.prompt, self.task.system or own_system, before_last=turns)

    def _with_excerpts(self, item: EvalItem, system: str) -> list[dict]:
        chunks = self.retriever.search(question_of(item), self.top_k) if self.retriever else []
        return _replace_system(item.prompt, with_excerpts(system, chunks))

    def sources(self, item: EvalItem) -> list[str]:
        """The chunks a rag rung retrieves for this item, as `file#chunk`."""
        if self.retriever is None:
            return []
        return [
            f"{c.source}#{c.index}" for c in self.retriever.search(question_of(item), self.top_k)
        ]


def _replace_system(
    prompt: list[dict], system: str, before_last: list[dict] | None = None
) -> list[dict]:
    turns = [m for m in prompt if m.get("role") != "system"]
    head = [{"role": "system", "content": system}] if system else []
    return head + turns[:-1] + list(before_last or []) + turns[-1:]
