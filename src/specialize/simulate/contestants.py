"""Who answers: the ladder's rungs on the local model (base, prompt, rag, tuned, tuned+rag), built
by the ladder's own prompt builders, or any OpenAI-compatible endpoint (`specialize serve`, vLLM,
a hosted API), so a specialist can be tested exactly as it is deployed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from specialize.evaluate.runner import generate_batch, prompt_ids
from specialize.evaluate.tasks import EvalItem
from specialize.ladder.config import TaskConfig
from specialize.ladder.prompts import ExamplePool, RungPrompts
from specialize.ladder.retrieval import DocumentRetriever
from specialize.ladder.rungs import Adapter, LazyModels, adapter_from_spec
from specialize.models.generation import GenerationSettings
from specialize.simulate.config import Contestant, SimulationConfig
from specialize.simulate.endpoint import EndpointError, chat_completion


class Reply:
    """An assistant turn, or why there is none (errored: the endpoint failed; overflow: too long)."""

    def __init__(
        self,
        text: str = "",
        *,
        error: str | None = None,
        overflow: str | None = None,
        prompt_tokens: int | None = None,
    ):
        self.text, self.error, self.overflow, self.prompt_tokens = (
            text,
            error,
            overflow,
            prompt_tokens,
        )


class Contestants:
    """Every contestant of a simulation, sharing one base model with every adapter attached."""

    def __init__(self, config: SimulationConfig):
        self.config = config
        self.adapters: dict[str, Adapter] = {
            c.name: adapter_from_spec(f"{_safe(c.name)}={c.adapter}")
            for c in config.contestants
            if c.adapter
        }
        local = any(c.kind != "endpoint" for c in config.contestants)
        self.models = LazyModels(config.model, list(self.adapters.values())) if local else None
        kinds = {c.kind for c in config.contestants}
        self.pool = (
            ExamplePool(config.prompt.examples)
            if "prompt" in kinds and config.prompt.examples and config.prompt.shots
            else None
        )
        self.retriever = (
            DocumentRetriever(config.rag.documents, max_words=config.rag.chunk_words)
            if kinds & {"rag", "tuned+rag"} and config.rag.documents
            else None
        )
        self._tokenizer = None

    def messages(self, contestant: Contestant, history: list[dict]) -> list[dict]:
        """What the contestant's model sees: the ladder rung's prompt around the conversation."""
        if contestant.kind == "endpoint":
            system = contestant.system or self.config.domain.system
            return ([{"role": "system", "content": system}] if system else []) + history
        own = self.config.domain.system
        item = EvalItem(
            id="turn", prompt=([{"role": "system", "content": own}] if own else []) + history
        )
        task = TaskConfig(name="simulation", data="-", system=contestant.system)
        rung = RungPrompts(
            task, self.pool, self.config.prompt.shots, self.retriever, self.config.rag.top_k
        )
        return rung.build(contestant.kind, item)

    def tokenizer(self):
        if self.models is not None:
            return self.models.get(None)[1]
        if self._tokenizer is None:
            from specialize.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.config.model)
        return self._tokenizer

    def budget(self, contestant: Contestant) -> int | None:
        """Most tokens a prompt plus its reply may take (None: unknown, an endpoint with no budget set)."""
        if self.config.context_tokens:
            return self.config.context_tokens
        if contestant.kind == "endpoint":
            return None
        model = self.models.get(None)[0]
        return int(getattr(model.config, "max_position_embeddings", 0)) or None

    def reply(
        self, contestant: Contestant, conversations: list[list[dict]], *, progress: str | None
    ) -> list[Reply]:
        """One assistant turn for each conversation, in order; batched locally, concurrent remotely."""
        prompts = [self.messages(contestant, history) for history in conversations]
        limit = self.budget(contestant)
        replies: list[Reply | None] = [None] * len(prompts)
        lengths = (
            [len(prompt_ids(self.tokenizer(), p)) for p in prompts]
            if (limit or contestant.kind != "endpoint")
            else [None] * len(prompts)
        )
        for i, length in enumerate(lengths):
            if limit and length is not None and length + self.config.reply_tokens > limit:
                replies[i] = Reply(
                    overflow=f"prompt of {length} tokens + {self.config.reply_tokens} new tokens "
                    f"exceeds the context budget of {limit}",
                    prompt_tokens=length,
                )
        todo = [i for i, r in enumerate(replies) if r is None]
        if contestant.kind == "endpoint":
            texts = self._endpoint(contestant, [prompts[i] for i in todo])
        else:
            texts = self._local(contestant, [prompts[i] for i in todo], progress)
        for i, text in zip(todo, texts, strict=True):
            replies[i] = text if isinstance(text, Reply) else Reply(text, prompt_tokens=lengths[i])
            replies[i].prompt_tokens = lengths[i]
        return replies  # type: ignore[return-value]

    def _local(
        self, contestant: Contestant, prompts: list[list[dict]], progress: str | None
    ) -> list[str]:
        if not prompts:
            return []
        adapter = self.adapters.get(contestant.name)
        model, tokenizer, context = self.models.get(adapter)
        with context:
            return generate_batch(
                model,
                tokenizer,
                prompts,
                GenerationSettings(max_new_tokens=self.config.reply_tokens),
                batch_size=self.config.batch_size,
                progress=progress,
            )

    def _endpoint(self, contestant: Contestant, prompts: list[list[dict]]) -> list[Reply]:
        def ask(messages: list[dict]) -> Reply:
            try:
                return Reply(
                    chat_completion(
                        contestant.url or "",
                        messages,
                        model=contestant.model,
                        max_tokens=self.config.reply_tokens,
                        seed=self.config.seed,
                        api_key_env=contestant.api_key_env,
                        timeout_s=contestant.timeout_s,
                    )
                )
            except EndpointError as exc:
                return Reply(error=str(exc))

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(ask, prompts))


def _safe(name: str) -> str:
    # PEFT adapter names become module attribute names: no dots, colons or plus signs.
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)
