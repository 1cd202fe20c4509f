"""Parity with lm-evaluation-harness: the same multiple-choice items scored by us and by the harness.

The harness side runs the harness's own code, not a copy of it: its `HFLM` model class computes
the log-likelihoods, and a `ConfigurableTask` of output type `multiple_choice` builds the requests
(context, target delimiter + choice) and turns the log-likelihoods into acc and acc_norm (argmax of
the log-likelihood divided by the choice's length in characters). Our side is `score_choices`, the
scorer behind `specialize eval` and the retention suite. Both score one model object, so whatever
differs is the scoring, not the weights.

Tolerances:
- acc and acc_norm: none. Both sides score the same items, so a score is a mean of per-item 0/1
  and any difference is an item whose prediction differs; each such item fails the check.
- per-choice log-likelihood: the two sides batch differently (the harness runs every full sequence
  right-padded; we run each context once, left-padded, with all its choices in the same row under a
  4D mask), so the sums agree to float rounding, not bit for bit. In float32 the rounding of a
  log-softmax over a 49k vocabulary, summed over a few dozen tokens, is ~1e-5 nats (measured up to
  9.6e-5 on the default model's 200 HellaSwag items, whose endings are longest); 1e-3 leaves a 10x
  margin and is still far below the ~0.1-nat gaps that decide predictions. Half precision keeps ~3
  significant digits of logits of size ~20, so 5e-2 there.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import logging
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from specialize.errors import DataError, SpecializeError
from specialize.evaluate.stats import wilson
from specialize.evaluate.tasks import EvalItem, score_choices

HARNESS_EXTRA = "pip install 'specialize[lmeval]'"
LL_TOLERANCE = {"float32": 1e-3, "float64": 1e-3, "half": 5e-2}


class HarnessMissingError(SpecializeError):
    """lm-evaluation-harness (the `lm_eval` package) is not installed."""


def require_harness() -> str:
    """Return the installed lm_eval version, or raise with the extra to install."""
    if importlib.util.find_spec("lm_eval") is None:
        raise HarnessMissingError(
            "the parity check needs lm-evaluation-harness (the lm_eval package)",
            fix=HARNESS_EXTRA,
        )
    return importlib.metadata.version("lm_eval")


def default_tolerance(model) -> float:
    """The log-likelihood tolerance for the model's dtype (see the module docstring)."""
    name = str(next(model.parameters()).dtype).removeprefix("torch.")
    return LL_TOLERANCE.get(name, LL_TOLERANCE["half"])


def choice_tasks(tasks: dict[str, list[EvalItem]]) -> tuple[dict[str, list[EvalItem]], dict]:
    """Split tasks into those with multiple-choice items and {task: why skipped} for the rest."""
    kept, skipped = {}, {}
    for name, items in tasks.items():
        choice = [i for i in items if i.choices is not None]
        if choice:
            kept[name] = choice
        if len(choice) < len(items):
            skipped[name] = (
                f"{len(items) - len(choice)} generated item(s): the check compares "
                "log-likelihood scoring only"
            )
    if not kept:
        raise DataError(
            "no multiple-choice items to compare",
            fix="use --suite standard, or a --data file with question+choices+answer rows",
        )
    return kept, skipped


def parity(
    model,
    tokenizer,
    tasks: dict[str, list[EvalItem]],
    *,
    batch_size: int = 8,
    tolerance: float | None = None,
    progress: bool = True,
) -> dict:
    """Score every task's items through our scorer and through lm-eval's HFLM; compare item by item.

    Returns the report: per task n, both sides' acc and acc_norm (with Wilson CIs), the largest
    per-choice log-likelihood difference, the items whose predictions differ, and `passed`.
    """
    version = require_harness()
    tolerance = default_tolerance(model) if tolerance is None else tolerance
    with _quiet_harness():
        lm = _harness_model(model, tokenizer, batch_size)
    report: dict = {"tasks": {}, "items": {}}
    for name, items in tasks.items():
        label = f"parity {name}" if progress else None
        ours = score_choices(model, tokenizer, items, batch_size=batch_size, progress=label)
        theirs = harness_scores(lm, name, items, progress=progress)
        rows = [_compare(i, o, t) for i, o, t in zip(items, ours, theirs, strict=True)]
        report["tasks"][name] = _summary(rows, tolerance)
        report["items"][name] = rows
    report.update(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        harness={"package": "lm_eval", "version": version, "model_class": "HFLM"},
        tolerance={"loglikelihood": tolerance, "acc": 0.0, "acc_norm": 0.0},
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        passed=all(t["passed"] for t in report["tasks"].values()),
    )
    return report


def harness_scores(lm, name: str, items: list[EvalItem], *, progress: bool = True) -> list[dict]:
    """Return, per item, the harness's choice log-likelihoods and its acc/acc_norm for it.

    The items become the documents of a multiple_choice ConfigurableTask; its requests go through
    `lm.loglikelihood` and its `process_results`, as lm_eval's evaluator runs them.
    """
    import datasets
    from lm_eval.api.task import ConfigurableTask

    docs = [
        {
            "id": item.id,
            "context": item.context,
            "choices": [c.removeprefix(" ") for c in item.choices],  # the delimiter is the task's
            "gold": item.gold,
        }
        for item in items
    ]
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
    config = {
        "task": f"specialize_parity_{name}",
        "custom_dataset": lambda **_: dataset,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": lambda doc: doc["context"],
        "doc_to_choice": lambda doc: doc["choices"],
        "doc_to_target": lambda doc: doc["gold"],
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    with _quiet_harness():
        task = ConfigurableTask(config=config)
        task.build_all_requests(limit=None, rank=0, world_size=1)
        responses = lm.loglikelihood(task.instances, disable_tqdm=not progress)
        for instance, response in zip(task.instances, responses, strict=True):
            instance.resps.append(response)
        task.apply_filters()
    by_doc = defaultdict(list)
    for instance in task.instances:
        by_doc[instance.doc_id].append(instance)
    out = []
    for doc_id, doc in task.doc_iterator():
        requests = sorted(by_doc[doc_id], key=lambda r: r.idx)
        results = [r.filtered_resps["none"] for r in requests]
        metrics = task.process_results(doc, results)
        out.append(
            {
                "logprobs": [float(ll) for ll, _ in results],
                "acc": float(metrics["acc"]),
                "acc_norm": float(metrics["acc_norm"]),
                "requests": [list(r.args) for r in requests],
            }
        )
    return out


def _harness_model(model, tokenizer, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def _compare(item: EvalItem, ours, theirs: dict) -> dict:
    """One item's two scorings side by side; predictions of the harness as its task computes them."""
    lengths = [len(c.removeprefix(" ")) for c in item.choices]
    harness_lls = theirs["logprobs"]
    pred = _argmax(harness_lls)
    pred_norm = _argmax([ll / n for ll, n in zip(harness_lls, lengths, strict=True)])
    diff = max(abs(a - b) for a, b in zip(ours.logprobs, harness_lls, strict=True))
    ranked = sorted(harness_lls, reverse=True)
    return {
        "id": item.id,
        "gold": item.gold,
        "ours": {
            "logprobs": ours.logprobs,
            "pred": ours.pred,
            "pred_norm": ours.pred_norm,
            "acc": float(ours.pred == item.gold),
            "acc_norm": float(ours.pred_norm == item.gold),
        },
        "harness": {
            "logprobs": harness_lls,
            "pred": pred,
            "pred_norm": pred_norm,
            "acc": theirs["acc"],
            "acc_norm": theirs["acc_norm"],
        },
        "requests": theirs["requests"],
        "max_abs_ll_diff": diff,
        # how close the harness's top two choices are: a flip inside this gap is a near tie
        "top_gap": ranked[0] - ranked[1] if len(ranked) > 1 else None,
    }


def _summary(rows: list[dict], tolerance: float) -> dict:
    n = len(rows)
    differ = {
        metric: [r["id"] for r in rows if r["ours"][key] != r["harness"][key]]
        for metric, key in (("acc", "pred"), ("acc_norm", "pred_norm"))
    }
    scores = {}
    for side in ("ours", "harness"):
        scores[side] = {
            metric: wilson(sum(r[side][metric] for r in rows), n).as_dict()
            for metric in ("acc", "acc_norm")
        }
    # the harness's own acc must be its prediction's correctness; if not, this check is wrong
    inconsistent = [
        r["id"]
        for r in rows
        if r["harness"]["acc"] != float(r["harness"]["pred"] == r["gold"])
        or r["harness"]["acc_norm"] != float(r["harness"]["pred_norm"] == r["gold"])
    ]
    max_diff = max(r["max_abs_ll_diff"] for r in rows)
    passed = (
        max_diff <= tolerance
        and not differ["acc"]
        and not differ["acc_norm"]
        and not inconsistent
        and all(scores["ours"][m]["mean"] == scores["harness"][m]["mean"] for m in scores["ours"])
    )
    return {
        "n": n,
        "ours": scores["ours"],
        "harness": scores["harness"],
        "max_abs_ll_diff": max_diff,
        "mean_item_ll_diff": sum(r["max_abs_ll_diff"] for r in rows) / n,
        "predictions_differ": {m: len(ids) for m, ids in differ.items()},
        "differing_items": differ,
        "inconsistent_items": inconsistent,
        "passed": passed,
    }


def _argmax(values: list[float]) -> int:
    """The first index of the largest value, as numpy's argmax (the harness's) breaks ties."""
    return max(range(len(values)), key=values.__getitem__)


@contextmanager
def _quiet_harness():
    """Keep lm_eval's info and warning lines (about being handed a loaded model) off the console."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_parity(
    model_ref: str,
    *,
    adapter: str | Path | None = None,
    suite: str | None = None,
    data: str | Path | None = None,
    only: list[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    tolerance: float | None = None,
    out: str | Path = "parity.json",
    progress: bool = True,
) -> dict:
    """Load the model, pick the items (suite and/or file), compare, and write parity.json.

    Without a suite, the standard suite is compared unless a data file is given.
    """
    from specialize.artifacts import ParityReport
    from specialize.models.loading import adapter_dir, load_model, resolve_model

    require_harness()
    suite = suite or (None if data is not None else "standard")
    tasks, skipped = choice_tasks(select_tasks(suite, data, only, limit))
    resolved = resolve_model(model_ref)
    model, tokenizer = load_model(
        resolved, adapter=adapter_dir(adapter) if adapter is not None else None
    )
    report = parity(
        model, tokenizer, tasks, batch_size=batch_size, tolerance=tolerance, progress=progress
    )
    report["model"] = {
        "reference": model_ref,
        "path": str(resolved.path),
        "adapter": str(adapter) if adapter is not None else None,
        "device": str(model.device),
    }
    report["skipped"] = skipped
    ParityReport.from_dict(report).write(out)
    return report


def select_tasks(
    suite: str | None, data: str | Path | None, only: list[str] | None, limit: int | None
) -> dict[str, list[EvalItem]]:
    """{task: items} of the standard suite and/or an eval file, filtered by name, first `limit` each."""
    from specialize.evaluate.suites import standard_tasks
    from specialize.evaluate.tasks import load_eval_items

    if suite not in (None, "standard"):
        raise DataError(
            f"--suite {suite}: only the standard suite has multiple-choice items",
            fix="use --suite standard, or --data FILE",
        )
    tasks = dict(standard_tasks()) if suite == "standard" else {}
    if data is not None:
        tasks[Path(data).stem] = load_eval_items(data)
    if only:
        unknown = sorted(set(only) - set(tasks))
        if unknown:
            raise DataError(
                f"unknown task(s) {', '.join(unknown)}", fix=f"choose from {', '.join(tasks)}"
            )
        tasks = {name: items for name, items in tasks.items() if name in only}
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit {limit}: expected a positive number of items per task")
        tasks = {name: items[:limit] for name, items in tasks.items()}
    if not tasks:
        raise DataError("nothing to compare", fix="give --suite standard and/or --data FILE")
    return tasks
