"""Judges beyond rule checks: a reward model (a `method: reward` run) with a score threshold, and an
LLM behind an OpenAI-compatible endpoint grading against a rubric.

A judge that cannot give a verdict (an endpoint error, an answer that is not the JSON asked for)
counts as "judge failed", never as a pass, and its raw answer is kept.
"""

from __future__ import annotations

import json
import re

from specialize.simulate.config import LLMJudge, RewardJudge
from specialize.simulate.endpoint import EndpointError, chat_completion

JUDGE_INSTRUCTIONS = (
    "You grade a conversation between a customer and a support assistant against a rubric. "
    'Answer with one JSON object and nothing else: {"verdict": "pass" or "fail", "reason": "..."}.'
)


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(
        f"{m['role'].upper()}: {m['content']}" for m in messages if m["role"] != "system"
    )


def llm_verdict(judge: LLMJudge, rubric: str, messages: list[dict]) -> dict:
    """Return {passed, reason, raw, judge_failed} for one conversation."""
    prompt = [
        {"role": "system", "content": JUDGE_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"Rubric: {rubric}\n\nConversation:\n{conversation_text(messages)}",
        },
    ]
    try:
        raw = chat_completion(
            judge.url,
            prompt,
            model=judge.model,
            max_tokens=judge.max_tokens,
            api_key_env=judge.api_key_env,
            timeout_s=judge.timeout_s,
        )
    except EndpointError as exc:
        return {
            "passed": False,
            "judge_failed": True,
            "reason": f"judge failed: {exc}",
            "raw": None,
        }
    return parse_verdict(raw)


def parse_verdict(raw: str) -> dict:
    """Return the verdict in a judge's answer, or judge_failed with the raw text kept."""
    match = re.search(r"\{.*\}", raw, re.DOTALL)
    try:
        value = json.loads(match.group(0)) if match else None
    except ValueError:
        value = None
    verdict = str(value.get("verdict", "")).strip().lower() if isinstance(value, dict) else ""
    if verdict not in ("pass", "fail"):
        return {
            "passed": False,
            "judge_failed": True,
            "reason": 'judge failed: no {"verdict": "pass"|"fail"} object in its answer',
            "raw": raw,
        }
    return {
        "passed": verdict == "pass",
        "judge_failed": False,
        "reason": str(value.get("reason", "")) or verdict,
        "raw": raw,
    }


class RewardScorer:
    """A reward model run, loaded once, scoring whole conversations."""

    def __init__(self, judge: RewardJudge, default_model: str):
        from specialize.train.judge import load_judge

        self.judge = judge
        self.scorer = load_judge(judge.run, judge.model or default_model)

    def scores(self, conversations: list[list[dict]]) -> list[float]:
        return self.scorer.score(conversations)

    def verdict(self, score: float, threshold: float | None) -> dict:
        limit = self.judge.threshold if threshold is None else threshold
        passed = score >= limit
        return {
            "passed": passed,
            "judge_failed": False,
            "reason": f"reward {score:.3f} {'>=' if passed else '<'} threshold {limit}",
            "score": score,
        }
