"""A broken scenario file: every problem at once, each with file:line and the fix."""

import textwrap

import pytest

from specialize.errors import ConfigError
from specialize.simulate.config import load_scenarios
from tests.conftest import REPO

BROKEN = """\
contestants:
  - {name: base, kind: base}
  - {name: bot, kind: endpoint, url: "http://127.0.0.1:9/v1"}
personas:
  alva: {description: A student.}
scenarios:
  - name: fee
    persona: alva
    goal: Learn the fee.
    opening: What is the fee?
    max_turn: 3
  - name: odd-check
    persona: alva
    goal: x
    opening: hi
    checks:
      - {kind: contians, value: fee}
  - name: who
    persona: alva
    goal: x
    opening: hi
    contestants: [base, tunned]
  - name: order
    persona: alva
    goal: x
    opening: hi
    max_turns: 2
    turns: [one, two]
    checks:
      - {kind: refusal, turn: 3}
  - name: pic
    persona: bob
    goal: x
    opening: hi
    opening_image: missing.png
"""


def _problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "scenarios.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_scenarios(path)
    return caught.value.problems


def _one(problems: list[str], needle: str) -> str:
    found = [p for p in problems if needle in p]
    assert len(found) == 1, (needle, problems)
    return found[0]


def test_every_problem_is_reported_at_once_with_file_and_line(tmp_path):
    problems = _problems(tmp_path, BROKEN)
    where = str(tmp_path / "scenarios.yaml")
    unknown_key = _one(problems, "unknown key")
    assert (
        unknown_key.startswith(f"{where}:11:")
        and "did you mean 'scenarios.0.max_turns'" in unknown_key
    )
    kind = _one(problems, "unknown check kind")
    assert kind.startswith(f"{where}:17:") and "did you mean 'contains'" in kind
    contestant = _one(problems, "no contestant named")
    assert contestant.startswith(f"{where}:22:") and "known: base, bot" in contestant
    order = _one(problems, "cannot fit in max_turns=2")
    assert order.startswith(f"{where}:28:")
    turn = _one(problems, "turn: 3 cannot happen")
    assert turn.startswith(f"{where}:30:")
    assert _one(problems, "no persona named 'bob'").startswith(f"{where}:32:")
    assert _one(problems, "attachment 'missing.png' not found").startswith(f"{where}:35:")
    assert len(problems) == 7


def test_the_cli_prints_every_problem_and_exits_2(tmp_path, cli):
    path = tmp_path / "scenarios.yaml"
    path.write_text(BROKEN)
    code, _, err = cli("simulate", path, "--out", tmp_path / "out")
    assert code == 2 and "7 problem(s)" in err and "unknown check kind 'contians'" in err
    code, _, err = cli("config", "validate", path)
    assert code == 2 and "no contestant named 'tunned'" in err


def test_a_contestant_needs_what_its_kind_needs(tmp_path):
    problems = _problems(
        tmp_path,
        """\
        contestants:
          - {name: t, kind: tuned}
          - {name: e, kind: endpoint}
          - {name: x, kind: finetuned}
        personas: {a: {description: d}}
        scenarios: [{name: s, persona: a, goal: g, opening: hi, checks: [{kind: judge, rubric: r}, {kind: within_turns, turns: 1}, {kind: in_domain}]}]
        """,
    )
    assert any(":2:" in p and "needs adapter" in p for p in problems)
    assert any(":3:" in p and "needs url" in p for p in problems)
    assert any(":4:" in p and "contestants.2.kind" in p for p in problems)
    assert any("a judge check needs judges.llm" in p for p in problems)
    assert any("within_turns needs a goal check" in p for p in problems)
    assert any("in_domain needs domain.keywords or domain.documents" in p for p in problems)


def test_the_shipped_nordvik_scenarios_meet_the_brief():
    config = load_scenarios(REPO / "examples" / "nordvik" / "scenarios.yaml")
    assert len(config.scenarios) >= 24 and len(config.personas) >= 6
    adversarial = [s for s in config.scenarios if s.adversarial]
    assert len(adversarial) >= 6
    names = {s.name for s in adversarial}
    assert {
        "other-customers-balance",
        "ignore-instructions",
        "abusive-customer",
        "off-topic-recipe",
        "wrong-premise-fee",
        "iban-and-card-given",
    } <= names
    assert {c.kind for c in config.contestants} >= {"base", "prompt", "rag"}
