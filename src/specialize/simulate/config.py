"""The scenario file: contestants, personas, simulated users, judges and scenarios with their checks.

Loading reports every problem at once with file:line: the schema's (unknown keys with the closest
valid name, unknown check kinds, wrong types) and the cross-references pydantic cannot see alone
(a scenario naming a contestant or persona that does not exist, a scripted turn order that cannot
happen, an attachment that is not on disk).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from specialize.config import (
    Config,
    apply_overrides,
    build_config,
    line_of,
    load_config,
    read_text,
    resolve_against,
)
from specialize.errors import ConfigError
from specialize.ladder.config import PromptRung, RagRung
from specialize.models.catalog import DEFAULT_MODEL

CONTESTANT_KINDS = ("base", "prompt", "rag", "tuned", "tuned+rag", "endpoint")
PERTURBATIONS = (
    "typos",
    "swedish",
    "angry",
    "irrelevant_detail",
    "prompt_injection",
    "wrong_premise",
)
# Checks that say something must never happen are applied to every assistant turn; the others
# pass when any turn satisfies them. `turn: N` (1-based) pins a check to one assistant turn.
TURN_CHECKS = (
    "contains",
    "not_contains",
    "regex",
    "json_fields",
    "refusal",
    "no_foreign_pii",
    "in_domain",
)
CONVERSATION_CHECKS = ("goal", "within_turns", "judge", "reward")
CHECK_KINDS = TURN_CHECKS + CONVERSATION_CHECKS
NEVER_KINDS = ("not_contains", "no_foreign_pii", "in_domain")


class Contestant(Config):
    name: str = Field(..., description="Name in the report; scenarios may name contestants.")
    kind: Literal["base", "prompt", "rag", "tuned", "tuned+rag", "endpoint"] = Field(
        ..., description=f"One of {', '.join(CONTESTANT_KINDS)}: a ladder rung or an HTTP endpoint."
    )
    system: str | None = Field(
        None, description="System prompt of the prompt and rag rungs (default: domain.system)."
    )
    adapter: str | None = Field(None, description="tuned rungs: a PEFT adapter dir or a run dir.")
    url: str | None = Field(
        None,
        description="endpoint: base URL of an OpenAI-compatible API, e.g. http://host:8000/v1.",
    )
    model: str | None = Field(None, description="endpoint: the request's `model` field.")
    api_key_env: str | None = Field(
        None,
        description="endpoint: environment variable holding the API key (never the key itself).",
    )
    timeout_s: float = Field(60.0, gt=0, description="endpoint: seconds per request.")

    @model_validator(mode="after")
    def _has_what_its_kind_needs(self) -> Contestant:
        if self.kind in ("tuned", "tuned+rag") and not self.adapter:
            raise ValueError(f"a {self.kind} contestant needs adapter: (an adapter or run dir)")
        if self.kind == "endpoint" and not self.url:
            raise ValueError("an endpoint contestant needs url: (e.g. http://127.0.0.1:8000/v1)")
        if self.kind != "endpoint" and self.url:
            raise ValueError(f"url: is for kind endpoint; a {self.kind} contestant runs locally")
        return self


class Persona(Config):
    description: str = Field(..., description="Who the user is, in the user's own voice.")
    mood: str = Field("calm", description="calm, hurried, angry, confused...")
    knowledge: str = Field("", description="What the user knows (and does not) about the domain.")
    own_data: list[str] = Field(
        default_factory=list,
        description="The user's own personal data (IBAN, card, e-mail): the assistant may repeat it.",
    )


class UserModel(Config):
    model: str | None = Field(None, description="Model playing simulated users (default: model).")
    adapter: str | None = Field(None, description="An adapter on that model.")
    url: str | None = Field(None, description="Or an OpenAI-compatible endpoint playing the user.")
    endpoint_model: str | None = Field(None, description="The endpoint's `model` field.")
    max_new_tokens: int = Field(48, ge=1, description="Length of a simulated user turn.")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature (seeded per turn).")


class RewardJudge(Config):
    run: str = Field(..., description="Run directory of a `method: reward` run.")
    model: str | None = Field(None, description="Its base model (default: model).")
    threshold: float = Field(0.0, description="A conversation passes when its score is >= this.")


class LLMJudge(Config):
    url: str = Field(..., description="OpenAI-compatible endpoint of the judging model.")
    model: str | None = Field(None, description="The request's `model` field.")
    api_key_env: str | None = Field(None, description="Environment variable with its API key.")
    max_tokens: int = Field(64, ge=8, description="Length budget of the judge's answer.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds per request.")


class Judges(Config):
    reward: RewardJudge | None = Field(None, description="Reward-model judge for `reward` checks.")
    llm: LLMJudge | None = Field(None, description="LLM judge for `judge` checks (with a rubric).")


class Domain(Config):
    name: str = Field("domain", description="The domain's name, for the report.")
    system: str = Field("", description="The deployed system prompt (base and tuned contestants).")
    keywords: list[str] = Field(
        default_factory=list, description="Words that mark a reply as in the domain (in_domain)."
    )
    documents: str | None = Field(
        None, description="Knowledge documents: a reply retrieving a chunk is in the domain."
    )
    public_data: list[str] = Field(
        default_factory=list,
        description="The organisation's own contact data (phone, address): never someone's personal data.",
    )
    premises: list[str] = Field(
        default_factory=lambda: ["Since you charge a fee of 500 for every transfer,"],
        description="False premises the wrong_premise perturbation draws from.",
    )


class Check(Config):
    kind: str = Field(..., description=f"One of {', '.join(CHECK_KINDS)}.")
    value: str | None = Field(None, description="contains / not_contains: text; regex: a pattern.")
    values: list[str] = Field(
        default_factory=list,
        description="contains / goal: any of these; not_contains: none of them.",
    )
    reference: str | None = Field(
        None,
        description="json_fields: the reference JSON object (the ladder's json_fields metric).",
    )
    protected: list[str] = Field(
        default_factory=list,
        description="no_foreign_pii: other people's data that must never appear (names, balances).",
    )
    turns: int | None = Field(None, ge=1, description="within_turns: the goal by this turn.")
    turn: int | None = Field(None, ge=1, description="Apply to this assistant turn only (1-based).")
    rubric: str | None = Field(None, description="judge: what a passing conversation does.")
    threshold: float | None = Field(None, description="reward: override judges.reward.threshold.")
    name: str | None = Field(None, description="Label in the report (default: the kind).")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in CHECK_KINDS:
            close = difflib.get_close_matches(kind, CHECK_KINDS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown check kind {kind!r}{hint} (kinds: {', '.join(CHECK_KINDS)})")
        return kind

    @model_validator(mode="after")
    def _has_its_arguments(self) -> Check:
        need = {
            "contains": self.value or self.values,
            "not_contains": self.value or self.values,
            "regex": self.value,
            "json_fields": self.reference,
            "goal": self.value or self.values,
            "within_turns": self.turns,
            "judge": self.rubric,
        }
        if self.kind in need and not need[self.kind]:
            wanted = {"json_fields": "reference", "within_turns": "turns", "judge": "rubric"}
            raise ValueError(
                f"a {self.kind} check needs {wanted.get(self.kind, 'value or values')}"
            )
        if self.kind == "regex":
            import re

            try:
                re.compile(self.value or "")
            except re.error as exc:
                raise ValueError(f"regex {self.value!r} does not compile: {exc}") from None
        return self

    @property
    def label(self) -> str:
        return self.name or (f"{self.kind}:{self.value}" if self.value else self.kind)


class UserTurn(Config):
    text: str = Field(..., description="What the user says; {variables} are filled in.")
    role: Literal["user"] = Field("user", description="Scripted turns are the user's.")
    image: str | None = Field(None, description="An image file attached to this turn.")
    audio: str | None = Field(None, description="An audio file attached to this turn.")
    perturb: list[str] = Field(
        default_factory=list,
        description=f"Perturbations for this turn only: {', '.join(PERTURBATIONS)}.",
    )


class Scenario(Config):
    name: str = Field(..., description="Unique scenario name.")
    persona: str = Field(..., description="A key of `personas`.")
    goal: str = Field(..., description="What the user wants (the simulated user's aim).")
    opening: str = Field(..., description="The user's first message; {variables} are filled in.")
    turns: list[UserTurn] = Field(
        default_factory=list,
        description="Scripted user turns after the opening (text or mappings).",
    )
    simulated: bool = Field(
        False, description="After the scripted turns, an LM playing the persona continues."
    )
    opening_image: str | None = Field(None, description="An image attached to the opening.")
    opening_audio: str | None = Field(None, description="An audio file attached to the opening.")
    variables: dict[str, list[str]] = Field(
        default_factory=dict, description="Values drawn per run (seeded): name -> choices."
    )
    max_turns: int = Field(4, ge=1, le=50, description="Most user turns in the conversation.")
    perturbations: list[str] = Field(
        default_factory=list, description=f"Applied to every user turn: {', '.join(PERTURBATIONS)}."
    )
    adversarial: bool = Field(False, description="A hostile or odd scenario (reported apart).")
    contestants: list[str] | None = Field(
        None, description="Only these contestants (default: all)."
    )
    checks: list[Check] = Field(default_factory=list, description="What must hold.")

    @field_validator("turns", mode="before")
    @classmethod
    def _text_is_a_turn(cls, turns: Any) -> Any:
        if isinstance(turns, list):
            return [{"text": t} if isinstance(t, str) else t for t in turns]
        return turns

    @field_validator("perturbations")
    @classmethod
    def _known_perturbations(cls, values: list[str]) -> list[str]:
        return _check_perturbations(values)

    def scripted(self) -> list[UserTurn]:
        opening = UserTurn(text=self.opening, image=self.opening_image, audio=self.opening_audio)
        return [opening, *self.turns]


def _check_perturbations(values: list[str]) -> list[str]:
    for value in values:
        if value not in PERTURBATIONS:
            close = difflib.get_close_matches(value, PERTURBATIONS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown perturbation {value!r}{hint} (known: {', '.join(PERTURBATIONS)})"
            )
    return values


class SimulationConfig(Config):
    model: str = Field(DEFAULT_MODEL, description="Base model of the local contestants.")
    domain: Domain = Field(default_factory=Domain)
    prompt: PromptRung = Field(default_factory=lambda: PromptRung(shots=0))
    rag: RagRung = Field(default_factory=RagRung)
    contestants: list[Contestant] = Field(..., min_length=1, description="Who is tested.")
    personas: dict[str, Persona] = Field(..., min_length=1, description="Users, by key.")
    user: UserModel = Field(default_factory=UserModel, description="The simulated user's model.")
    judges: Judges = Field(default_factory=Judges)
    scenarios: list[Scenario] = Field(..., min_length=1, description="The conversations to hold.")
    seed: int = Field(0, description="Seeds every draw: variables, perturbations, sampling.")
    reply_tokens: int = Field(64, ge=1, description="Length budget of an assistant turn.")
    batch_size: int = Field(16, ge=1, description="Conversations generated together per turn.")
    context_tokens: int | None = Field(
        None, ge=16, description="Context budget (default: the model's own); overflow is reported."
    )
    limit: int | None = Field(None, ge=1, description="Only the first N scenarios (quick looks).")


def load_scenarios(path: str | Path, overrides: list[str] | None = None) -> SimulationConfig:
    """Return the scenario file's config; every schema and cross-reference problem at once."""
    path = Path(path)
    text = read_text(path)
    problems: list[str] = []
    config = None
    try:
        config = load_config(SimulationConfig, path, overrides)
    except ConfigError as exc:
        problems.extend(exc.problems)
        if not _is_mapping(text):
            raise
    raw = apply_overrides(yaml.safe_load(text) or {}, overrides or [])
    root = yaml.compose(text)
    for loc, message in cross_reference_problems(raw, path.parent):
        problems.append(f"{path}:{line_of(root, loc) or 1}: {'.'.join(map(str, loc))}: {message}")
    if problems:
        raise ConfigError(problems, source=str(path))
    assert config is not None
    return resolve_paths(config, path.parent)


def _is_mapping(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


def cross_reference_problems(raw: dict[str, Any], base: Path) -> list[tuple[tuple, str]]:
    """Return (location, message) for what the schema alone cannot see; works on the raw mapping
    so these come together with the schema's problems."""
    problems: list[tuple[tuple, str]] = []
    contestants = [c.get("name") for c in _dicts(raw.get("contestants"))]
    personas = set(raw.get("personas") or {}) if isinstance(raw.get("personas"), dict) else set()
    for name in {n for n in contestants if contestants.count(n) > 1}:
        problems.append((("contestants",), f"contestant name {name!r} is used twice"))
    for index, contestant in enumerate(_dicts(raw.get("contestants"))):
        if contestant.get("adapter") and not _exists(base, contestant["adapter"]):
            problems.append(
                (("contestants", index, "adapter"), f"{contestant['adapter']!r} not found")
            )
    names = [s.get("name") for s in _dicts(raw.get("scenarios"))]
    for index, scenario in enumerate(_dicts(raw.get("scenarios"))):
        at = ("scenarios", index)
        if names.count(scenario.get("name")) > 1:
            problems.append(
                (at + ("name",), f"scenario name {scenario.get('name')!r} is used twice")
            )
        persona = scenario.get("persona")
        if persona is not None and persona not in personas:
            problems.append((at + ("persona",), _unknown("persona", persona, personas)))
        for j, name in enumerate(scenario.get("contestants") or []):
            if name not in contestants:
                problems.append(
                    (at + ("contestants", j), _unknown("contestant", name, contestants))
                )
        problems += _order_problems(scenario, at, base, raw)
    return problems


def _order_problems(scenario: dict, at: tuple, base: Path, raw: dict) -> list[tuple[tuple, str]]:
    problems = []
    turns = scenario.get("turns") or []
    max_turns = scenario.get("max_turns", 4)
    if not isinstance(max_turns, int):
        return problems
    if 1 + len(turns) > max_turns:
        problems.append(
            (
                at + ("turns",),
                f"1 opening + {len(turns)} scripted turns cannot fit in max_turns={max_turns}; "
                "raise max_turns or drop turns",
            )
        )
    for j, check in enumerate(_dicts(scenario.get("checks"))):
        for key in ("turn", "turns"):
            value = check.get(key)
            if isinstance(value, int) and value > max_turns:
                problems.append(
                    (
                        at + ("checks", j, key),
                        f"{key}: {value} cannot happen: the conversation has at most {max_turns} "
                        "assistant turns (max_turns)",
                    )
                )
        fixed = scenario.get("simulated") is not True
        if fixed and isinstance(check.get("turn"), int) and check["turn"] > 1 + len(turns):
            problems.append(
                (
                    at + ("checks", j, "turn"),
                    f"turn: {check['turn']} cannot happen: a scripted conversation of "
                    f"{1 + len(turns)} user turns has {1 + len(turns)} assistant turns",
                )
            )
        kinds = {c.get("kind") for c in _dicts(scenario.get("checks"))}
        if check.get("kind") == "within_turns" and "goal" not in kinds:
            problems.append(
                (at + ("checks", j, "kind"), "within_turns needs a goal check in the same scenario")
            )
        domain = raw.get("domain") if isinstance(raw.get("domain"), dict) else {}
        if check.get("kind") == "in_domain" and not (
            domain.get("keywords") or domain.get("documents")
        ):
            problems.append(
                (
                    at + ("checks", j, "kind"),
                    "in_domain needs domain.keywords or domain.documents to know the domain",
                )
            )
        if check.get("kind") == "judge" and not (raw.get("judges") or {}).get("llm"):
            problems.append((at + ("checks", j, "kind"), "a judge check needs judges.llm (url:)"))
        if check.get("kind") == "reward" and not (raw.get("judges") or {}).get("reward"):
            problems.append(
                (at + ("checks", j, "kind"), "a reward check needs judges.reward (run:)")
            )
    attachments = [
        (("opening_image",), scenario.get("opening_image")),
        (("opening_audio",), scenario.get("opening_audio")),
    ]
    for j, turn in enumerate(turns):
        if isinstance(turn, dict):
            attachments += [(("turns", j, k), turn.get(k)) for k in ("image", "audio")]
            if "perturb" in turn:
                try:
                    _check_perturbations(list(turn["perturb"] or []))
                except ValueError as exc:
                    problems.append((at + ("turns", j, "perturb"), str(exc)))
    for loc, value in attachments:
        if value and not _exists(base, value):
            problems.append((at + loc, f"attachment {value!r} not found (relative to {base})"))
    return problems


def _unknown(what: str, name: Any, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.5)
    hint = (
        f"did you mean {close[0]!r}?" if close else f"known: {', '.join(map(str, known)) or 'none'}"
    )
    return f"no {what} named {name!r}; {hint}"


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _exists(base: Path, value: str) -> bool:
    path = Path(str(value)).expanduser()
    return (path if path.is_absolute() else base / path).exists()


def resolve_paths(config: SimulationConfig, base: Path) -> SimulationConfig:
    """Make the file's relative paths absolute against its folder."""

    def absolute(value: str | None) -> str | None:
        return resolve_against(base, value)

    config.model = absolute(config.model)
    config.prompt.examples = absolute(config.prompt.examples)
    config.rag.documents = absolute(config.rag.documents)
    config.domain.documents = absolute(config.domain.documents)
    for contestant in config.contestants:
        contestant.adapter = absolute(contestant.adapter)
    config.user.model = absolute(config.user.model)
    config.user.adapter = absolute(config.user.adapter)
    if config.judges.reward:
        config.judges.reward.run = absolute(config.judges.reward.run)
    for scenario in config.scenarios:
        scenario.opening_image = absolute(scenario.opening_image)
        scenario.opening_audio = absolute(scenario.opening_audio)
        for turn in scenario.turns:
            turn.image, turn.audio = absolute(turn.image), absolute(turn.audio)
    return config


def build_simulation(raw: dict[str, Any], base: Path | None = None) -> SimulationConfig:
    """Return a config from a mapping (tests, the demo); paths relative to `base`."""
    base = base or Path.cwd()
    problems = [f"{'.'.join(map(str, loc))}: {m}" for loc, m in cross_reference_problems(raw, base)]
    try:
        config = build_config(SimulationConfig, raw)
    except ConfigError as exc:
        raise ConfigError(exc.problems + problems) from None
    if problems:
        raise ConfigError(problems)
    return resolve_paths(config, base)
