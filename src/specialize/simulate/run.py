"""Hold every scenario's conversation with every contestant; check, judge and record each one.

Per contestant, the conversations of all its scenarios advance together one turn at a time, so
each turn is one batched generation. A finished conversation is appended to transcripts.jsonl at
once; a second run with the same inputs skips finished conversations (an errored one is tried
again). An endpoint that fails marks its conversations `errored` with the reason; a prompt that
would not fit the context marks its conversation `overflow`; the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from specialize.simulate.checks import Context, rule_results
from specialize.simulate.config import Contestant, Scenario, SimulationConfig
from specialize.simulate.contestants import Contestants
from specialize.simulate.users import (
    Utterance,
    draw_variables,
    is_done,
    persona_prompt,
    perturb,
    rng_for,
    scripted_utterance,
    user_view,
)

log = logging.getLogger(__name__)
TRANSCRIPTS = "transcripts.jsonl"
TEXT_ONLY_NOTE = "attachment not shown to the model: text-only contestants ignore images and audio"


@dataclass
class Conversation:
    contestant: Contestant
    scenario: Scenario
    variables: dict[str, str]
    fingerprint: str
    history: list[dict] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    status: str = "running"  # running | ok | errored | overflow
    reason: str = ""
    ended: str = ""
    checks: list[dict] = field(default_factory=list)
    passed: bool | None = None
    seconds: float = 0.0  # its share of the batched generation time (wall time / batch size)

    @property
    def key(self) -> str:
        return f"{self.contestant.name}/{self.scenario.name}"

    def finish(self, status: str, ended: str, reason: str = "") -> None:
        self.status, self.ended, self.reason = status, ended, reason


def run_simulation(
    config: SimulationConfig,
    out: str | Path,
    *,
    scenario_file: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the simulation into `out`; return the simulation.json report."""
    from specialize.simulate.report import write_reports

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scenarios = config.scenarios[: config.limit] if config.limit else config.scenarios
    finished = _finished(out / TRANSCRIPTS)
    hashes = input_hashes(config)
    pending = []
    for contestant in config.contestants:
        for scenario in scenarios:
            if scenario.contestants is not None and contestant.name not in scenario.contestants:
                continue
            fingerprint = conversation_fingerprint(config, contestant, scenario, hashes)
            if finished.get(f"{contestant.name}/{scenario.name}") == fingerprint:
                continue
            pending.append(
                Conversation(
                    contestant, scenario, draw_variables(scenario, config.seed), fingerprint
                )
            )
    if pending:
        log.info(
            "simulate: %d conversation(s) to hold, %d already done", len(pending), len(finished)
        )
        _hold(config, pending, out / TRANSCRIPTS, progress)
    return write_reports(config, out, scenarios, scenario_file, hashes)


def input_hashes(config: SimulationConfig) -> dict:
    """Content hashes of the weights a simulation uses: a retrained adapter at the same path, or a
    changed base, makes its conversations stale."""
    from specialize.models.loading import adapter_dir, content_hash, resolve_model

    local = any(c.kind != "endpoint" for c in config.contestants)
    user_local = not config.user.url and any(s.simulated for s in config.scenarios)
    return {
        "model": content_hash(resolve_model(config.model).path) if local or user_local else None,
        "adapters": {
            c.name: content_hash(adapter_dir(c.adapter)) for c in config.contestants if c.adapter
        },
        "user_adapter": content_hash(adapter_dir(config.user.adapter))
        if config.user.adapter
        else None,
        "reward": content_hash(adapter_dir(config.judges.reward.run))
        if config.judges.reward
        else None,
        # rag contestants read the documents, in_domain checks search them, prompt shots come
        # from the examples: edited files make the conversations that used them stale
        "documents": {
            name: _files_hash(Path(path))
            for name, path in (("domain", config.domain.documents), ("rag", config.rag.documents))
            if path
        },
        "examples": _files_hash(Path(config.prompt.examples)) if config.prompt.examples else None,
    }


def _files_hash(path: Path) -> str:
    """sha256 over a file, or over every file under a folder (by relative name and content)."""
    from specialize.artifacts import sha256_file

    if not path.is_dir():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [[str(p.relative_to(path)), sha256_file(p)] for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def conversation_fingerprint(
    config: SimulationConfig, contestant: Contestant, scenario: Scenario, hashes: dict
) -> str:
    """Everything that decides a conversation: a finished one with the same fingerprint is re-used."""
    decided_by = {
        "contestant": contestant.model_dump(mode="json"),
        "scenario": scenario.model_dump(mode="json"),
        "persona": config.personas[scenario.persona].model_dump(mode="json"),
        "model": config.model,
        "domain": config.domain.model_dump(mode="json"),
        "prompt": config.prompt.model_dump(mode="json"),
        "rag": config.rag.model_dump(mode="json"),
        "user": config.user.model_dump(mode="json"),
        "judges": config.judges.model_dump(mode="json"),
        "seed": config.seed,
        "reply_tokens": config.reply_tokens,
        "context_tokens": config.context_tokens,
        "weights": {**hashes, "adapters": hashes["adapters"].get(contestant.name)},
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()[:20]


def _finished(path: Path) -> dict[str, str]:
    """key -> fingerprint of every conversation already finished (not errored) in transcripts.jsonl."""
    done: dict[str, str] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut off by a kill: that conversation is held again
        if row.get("status") in ("ok", "overflow"):
            done[row["key"]] = row["fingerprint"]
        else:
            done.pop(row.get("key"), None)
    return done


def _hold(
    config: SimulationConfig, pending: list[Conversation], transcripts: Path, progress: bool
) -> None:
    contestants = Contestants(config)
    users = SimulatedUsers(config, contestants)
    judges = Judging(config, contestants)
    bar = tqdm(total=len(pending), desc="conversations", unit="conv", disable=not progress)
    for contestant in config.contestants:
        active = [c for c in pending if c.contestant.name == contestant.name]
        turn = 0
        while active:
            started = time.monotonic()
            _user_turn(config, active, turn, users)
            waiting = [c for c in active if c.status == "running"]
            label = f"{contestant.name} turn {turn + 1}" if progress else None
            replies = contestants.reply(contestant, [c.history for c in waiting], progress=label)
            for conversation, reply in zip(waiting, replies, strict=True):
                _record_reply(conversation, reply, turn)
            done = [c for c in active if c.status != "running"]
            judges.finish(done)
            for conversation in active:
                conversation.seconds += (time.monotonic() - started) / len(active)
            for conversation in done:
                _append(transcripts, _transcript(config, conversation))
                bar.update(1)
            active = [c for c in active if c.status == "running"]
            turn += 1
    bar.close()


def _user_turn(
    config: SimulationConfig, active: list[Conversation], turn: int, users: SimulatedUsers
) -> None:
    needs_model = []
    for conversation in active:
        scenario = conversation.scenario
        utterance = scripted_utterance(config, scenario, turn, conversation.variables)
        if utterance is None and not scenario.simulated:
            conversation.finish("ok", "script")
        elif utterance is None:
            needs_model.append(conversation)
        else:
            _say(conversation, utterance)
    if not needs_model:
        return
    outcomes, seed = users.next_turns(needs_model, turn)
    for conversation, outcome in zip(needs_model, outcomes, strict=True):
        if isinstance(outcome, Exception):
            conversation.finish("errored", "user", f"simulated user failed: {outcome}")
        elif is_done(outcome):
            conversation.finish("ok", "user_done")
        else:
            utterance = Utterance(outcome, "simulated", outcome, seed=seed)
            scenario = conversation.scenario
            _say(conversation, perturb(utterance, scenario.perturbations, config, scenario, turn))


def _say(conversation: Conversation, utterance: Utterance) -> None:
    notes = [f"{kind} {path}: {TEXT_ONLY_NOTE}" for kind, path in utterance.attachments.items()]
    conversation.history.append({"role": "user", "content": utterance.text})
    conversation.turns.append({"user": utterance.as_dict(), "assistant": None, "notes": notes})


def _record_reply(conversation: Conversation, reply, turn: int) -> None:
    record = conversation.turns[-1]
    record["prompt_tokens"] = reply.prompt_tokens
    if reply.error:
        conversation.finish("errored", "contestant", reply.error)
        return
    if reply.overflow:
        conversation.finish("overflow", "context", reply.overflow)
        return
    record["assistant"] = reply.text
    conversation.history.append({"role": "assistant", "content": reply.text})
    if turn + 1 >= conversation.scenario.max_turns:
        conversation.finish("ok", "max_turns")
    elif conversation.scenario.simulated and _goal_met(conversation):
        conversation.finish("ok", "goal")


def _goal_met(conversation: Conversation) -> bool:
    from specialize.simulate.checks import goal_reached_at

    if len(conversation.turns) < len(conversation.scenario.scripted()):
        return False  # the script is played out first, so every contestant meets it whole
    return (
        goal_reached_at(conversation.scenario, [t["assistant"] for t in conversation.turns])
        is not None
    )


class SimulatedUsers:
    """The LM playing the personas: a local model (with an optional adapter) or an endpoint."""

    def __init__(self, config: SimulationConfig, contestants: Contestants):
        self.config = config
        self.contestants = contestants
        self._model = None

    def next_turns(
        self, conversations: list[Conversation], turn: int
    ) -> tuple[list[str | Exception], int]:
        """The persona's next message in each conversation (or why not), and the sampling seed."""
        settings = self.config.user
        seed = rng_for(self.config.seed, "simulated-user", turn).randrange(2**31)
        views = [
            user_view(
                persona_prompt(self.config.personas[c.scenario.persona], c.scenario, c.variables),
                c.history,
            )
            for c in conversations
        ]
        if settings.url:
            from specialize.simulate.endpoint import EndpointError, chat_completion

            outcomes: list[str | Exception] = []
            for view in views:
                try:
                    outcomes.append(
                        chat_completion(
                            settings.url,
                            view,
                            model=settings.endpoint_model,
                            max_tokens=settings.max_new_tokens,
                            temperature=settings.temperature,
                            seed=seed,
                        )
                    )
                except EndpointError as exc:
                    outcomes.append(exc)
            return outcomes, seed
        from specialize.evaluate.runner import generate_batch
        from specialize.models.generation import GenerationSettings

        model, tokenizer, context = self._load()
        with context:
            replies = generate_batch(
                model,
                tokenizer,
                views,
                GenerationSettings(
                    max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,
                    seed=seed,
                ),
                batch_size=self.config.batch_size,
            )
        return list(replies), seed

    def _load(self):
        """(model, tokenizer, context): the contestants' base (adapters off) when the user is
        played by the same model, so it is not loaded twice; else its own copy."""
        from contextlib import nullcontext

        settings = self.config.user
        same = settings.model in (None, self.config.model) and not settings.adapter
        if same and self.contestants.models is not None:
            return self.contestants.models.get(None)
        if self._model is None:
            from specialize.models.loading import load_model

            self._model = load_model(settings.model or self.config.model, adapter=settings.adapter)
        return (*self._model, nullcontext())


class Judging:
    """Rule checks, then the reward model and the LLM judge, on conversations as they finish."""

    def __init__(self, config: SimulationConfig, contestants: Contestants):
        self.config = config
        self.contestants = contestants
        self._reward = None
        self._retriever = None

    def finish(self, conversations: list[Conversation]) -> None:
        ok = [c for c in conversations if c.status == "ok"]
        for conversation in ok:
            self._rules(conversation)
        self._reward_checks(ok)
        self._llm_checks(ok)
        for conversation in ok:
            results = conversation.checks
            conversation.passed = all(r["passed"] for r in results)

    def _rules(self, conversation: Conversation) -> None:
        scenario = conversation.scenario
        persona = self.config.personas[scenario.persona]
        context = Context(
            persona,
            self.config.domain.public_data,
            [t["user"]["text"] for t in conversation.turns],
            self.config.domain.keywords,
            self._in_documents() if self.config.domain.documents else None,
        )
        replies = [t["assistant"] for t in conversation.turns if t["assistant"] is not None]
        per_turn, results = rule_results(scenario, replies, context)
        for record, checks in zip(conversation.turns, per_turn, strict=False):
            record["checks"] = checks
        conversation.checks = results

    def _in_documents(self):
        if self._retriever is None:
            from specialize.ladder.retrieval import DocumentRetriever

            self._retriever = DocumentRetriever(self.config.domain.documents)
        return lambda text: bool(self._retriever.search(text, 1))

    def _reward_checks(self, conversations: list[Conversation]) -> None:
        """Score the conversation as it stood after each assistant turn: the last score decides
        the check; the earlier ones are that turn's verdict (for agreement with the rules)."""
        wanted = [
            (c, i) for c in conversations for i, r in enumerate(c.checks) if r["kind"] == "reward"
        ]
        if not wanted:
            return
        if self._reward is None:
            from specialize.simulate.judges import RewardScorer

            self._reward = RewardScorer(self.config.judges.reward, self.config.model)
        prefixes = [(c, i, p) for c, i in wanted for p in _turn_prefixes(c)]
        scores = self._reward.scores([self._judged_messages(p) for _, _, p in prefixes])
        verdicts: dict[tuple[int, int], list[dict]] = {}
        for (conversation, index, _), score in zip(prefixes, scores, strict=True):
            check = conversation.scenario.checks[index]
            verdict = self._reward.verdict(score, check.threshold)
            verdicts.setdefault((id(conversation), index), []).append(verdict)
        for conversation, index in wanted:
            per_turn = verdicts[(id(conversation), index)]
            _record_turn_verdicts(conversation, index, per_turn)
            conversation.checks[index].update(per_turn[-1])

    def _llm_checks(self, conversations: list[Conversation]) -> None:
        from specialize.simulate.judges import llm_verdict

        for conversation in conversations:
            for index, result in enumerate(conversation.checks):
                if result["kind"] == "judge":
                    rubric = conversation.scenario.checks[index].rubric or ""
                    per_turn = [
                        llm_verdict(self.config.judges.llm, rubric, prefix)
                        for prefix in _turn_prefixes(conversation)
                    ]
                    _record_turn_verdicts(conversation, index, per_turn)
                    result.update(per_turn[-1])

    def _judged_messages(self, history: list[dict]) -> list[dict]:
        system = self.config.domain.system
        return ([{"role": "system", "content": system}] if system else []) + history


def _turn_prefixes(conversation: Conversation) -> list[list[dict]]:
    """The conversation as it stood after each assistant turn (the last one is all of it)."""
    ends = [i + 1 for i, m in enumerate(conversation.history) if m["role"] == "assistant"]
    return [conversation.history[:end] for end in ends] or [conversation.history]


def _record_turn_verdicts(conversation: Conversation, index: int, verdicts: list[dict]) -> None:
    """Each turn gets the judge's verdict on the conversation so far, beside its rule checks."""
    check = conversation.checks[index]
    answered = [t for t in conversation.turns if t["assistant"] is not None]
    for record, verdict in zip(answered, verdicts, strict=False):  # no reply: nothing to record
        record.setdefault("judges", []).append(
            {"check": check["check"], "kind": check["kind"], **verdict}
        )


def _transcript(config: SimulationConfig, c: Conversation) -> dict:
    return {
        "key": c.key,
        "contestant": c.contestant.name,
        "contestant_kind": c.contestant.kind,
        "scenario": c.scenario.name,
        "persona": c.scenario.persona,
        "adversarial": c.scenario.adversarial,
        "fingerprint": c.fingerprint,
        "seed": config.seed,
        "variables": c.variables,
        "status": c.status,
        "reason": c.reason,
        "ended": c.ended,
        "turns": c.turns,
        "checks": c.checks,
        "passed": c.passed if c.status == "ok" else None,
        "seconds": round(c.seconds, 3),
    }


def _append(path: Path, row: dict) -> None:
    # A kill can leave a half-written last line: start on a fresh line so it stays the only bad one.
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as existing:
            existing.seek(-1, 2)
            torn = existing.read(1) != b"\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(("\n" if torn else "") + json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
