"""Prompt-format skew: do the requests an adapter is about to answer look like its training rows?

An adapter learns a layout along with its task: whether there is a system prompt, whether the
task's instruction sits in the system turn or in the user turn, whether retrieved excerpts come
with the question, and the chat template around it all. Requests in another layout (Alpaca
training rows with the instruction in the user turn, eval items with it in the system prompt)
can score near zero although the adapter learned the task. `check_skew` compares the two layouts
before `eval`, `ladder`, `simulate` and `serve` use an adapter; a mismatch is a warning naming
both layouts and the fix, recorded in the results.

The training rows are the run's prepared train split(s), found through the run directory
(config.yaml's data.train, the prepared copies under data/, run.json's manifests).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

from specialize.data.retrieval import EXCERPTS_HEADER

log = logging.getLogger(__name__)
# Rows read per training file: a layout is a majority, and a few thousand rows show it.
_MOST_ROWS = 5000
# A leading paragraph repeated in at least this share of user turns is a task instruction.
_SHARED_SHARE = 0.5


@dataclass(frozen=True)
class Layout:
    """How a set of prompts is laid out (the majority of them)."""

    system: bool  # a system prompt is present
    instruction: str  # "system turn" or "user turn": where the task's instruction sits
    context: bool  # retrieved excerpts ride in the system prompt
    template: str  # "chat template <id>" or "raw text (no chat template)"
    rows: int
    lead: str = ""  # the leading instruction most user turns share, when they share one

    def describe(self) -> str:
        return (
            f"{'a system prompt' if self.system else 'no system prompt'}, instruction in the "
            f"{self.instruction}, {'with' if self.context else 'without'} retrieved excerpts, "
            f"{self.template} ({self.rows} rows)"
        )


@dataclass
class SkewCheck:
    adapter: str
    training: Layout | None  # None when the training rows could not be found
    requests: Layout
    training_rows: list[str] = field(default_factory=list)  # the files read
    mismatches: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def skewed(self) -> bool:
        return bool(self.mismatches)

    def warning(self) -> str:
        return (
            f"prompt-format skew for adapter {self.adapter}: trained on "
            f"{self.training.describe() if self.training else '?'}; requests have "
            f"{self.requests.describe()}. Differs in: {', '.join(self.mismatches)}. "
            f"Fix: {' '.join(self.fixes)}"
        )

    def as_dict(self) -> dict:
        result = {
            "adapter": self.adapter,
            "checked": self.training is not None,
            "skewed": self.skewed,
            "training": asdict(self.training) if self.training else None,
            "requests": asdict(self.requests),
            "training_rows": self.training_rows,
            "mismatches": self.mismatches,
            "fixes": self.fixes,
        }
        if self.training is None:
            result["note"] = "training rows not found: the adapter is not inside a run directory"
        elif self.skewed:
            result["warning"] = self.warning()
        return result


def layout_of(prompts: list[list[dict] | str], template: str, known_lead: str = "") -> Layout:
    """Return the majority layout of prompts (message lists, or raw text for completions).

    `known_lead` is the training rows' shared leading instruction: a single request (serve)
    cannot show a shared lead by itself, but it can start with the one training used.
    """
    chats = [p for p in prompts if isinstance(p, list)]
    if len(chats) * 2 < len(prompts):
        return Layout(False, "user turn", False, "raw text (no chat template)", len(prompts))
    systems = [_system(m) for m in chats]
    # retrieved excerpts alone are context, not a system prompt of the task's own
    own = [s.partition(EXCERPTS_HEADER)[0].strip() for s in systems]
    with_system = sum(1 for s in own if s) * 2 >= len(chats)
    context = sum(1 for s in systems if EXCERPTS_HEADER in s) * 2 > len(chats)
    users = [_last_user(m) for m in chats]
    lead = _shared_lead(users)
    if not lead and known_lead:
        starts = sum(1 for u in users if " ".join(u.lower().split()).startswith(known_lead))
        lead = known_lead if starts * 2 > len(users) else ""
    in_user = not with_system or bool(lead)
    return Layout(
        with_system,
        "user turn" if in_user else "system turn",
        context,
        template,
        len(prompts),
        lead,
    )


@dataclass
class TrainingFormat:
    """The layout of an adapter's training rows (None when they cannot be found)."""

    layout: Layout | None
    files: list[str]
    trained_on: str | None  # the base model the run trained on


def training_format(adapter: str | Path, model_ref: str | None = None) -> TrainingFormat:
    """Return the layout of the training rows of the run `adapter` belongs to."""
    run = run_dir_of(Path(adapter))
    if run is None:
        return TrainingFormat(None, [], None)
    rows, files, raft = training_rows_of(run)
    record = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    trained_on = record.get("model") or model_ref
    if not rows:
        return TrainingFormat(None, [str(f) for f in files], trained_on)
    template = _template(model_ref)
    if model_ref and trained_on and trained_on != model_ref:
        template = _template(trained_on)
    prompts = [r["messages"][:-1] if "messages" in r else r.get("text", "") for r in rows]
    layout = layout_of(prompts, template)
    if raft:  # retrieved excerpts are added to the rows at training time (data.raft)
        layout = Layout(
            layout.system, layout.instruction, True, layout.template, layout.rows, layout.lead
        )
    return TrainingFormat(layout, [str(f) for f in files], trained_on)


def check_skew(
    adapter: str | Path,
    requests: list[list[dict] | str],
    model_ref: str | None = None,
    *,
    training: TrainingFormat | None = None,
    warn: bool = True,
) -> SkewCheck:
    """Compare the layout of `requests` with the adapter's training rows; warn on a mismatch.

    `training` saves re-reading the rows when one adapter answers many requests (serve).
    """
    training = training or training_format(adapter, model_ref)
    lead = training.layout.lead if training.layout else ""
    requests_layout = layout_of(requests, _template(model_ref), lead)
    check = SkewCheck(str(adapter), training.layout, requests_layout, training.files)
    if training.layout is None:
        return check
    check.mismatches, check.fixes = _compare(training.layout, check.requests, training.trained_on)
    if check.skewed and warn:
        log.warning(check.warning())
    return check


def _compare(train: Layout, req: Layout, trained_on: str | None) -> tuple[list[str], list[str]]:
    mismatches, fixes = [], []
    if train.template != req.template:
        mismatches.append(f"template ({train.template} vs {req.template})")
        fixes.append(
            "Send chat messages through the base model the adapter was trained on"
            + (f" ({trained_on})" if trained_on else "")
            + (", not raw text." if "raw" in req.template else ".")
        )
    if train.system != req.system or train.instruction != req.instruction:
        mismatches.append(
            f"instruction placement ({_placement(train)} in training vs {_placement(req)} in the requests)"
        )
        if req.instruction == "system turn":
            fixes.append(
                "Put the requests' instruction in the user turn as in training (drop the system "
                "prompt and prepend it to the user message; the ladder does it with "
                "tuned.conform_layout: true), or retrain with the instruction as the system "
                "prompt (Alpaca rows: a `system` field with the instruction, the input alone as "
                "`instruction`)."
            )
        else:
            fixes.append(
                "Give the requests the training rows' system prompt (the ladder moves a leading "
                "instruction paragraph there with tuned.conform_layout: true), or retrain on rows "
                "laid out like the requests (the instruction in the user turn)."
            )
    if req.context and not train.context:
        mismatches.append("retrieved excerpts (in the requests, never in training)")
        fixes.append(
            "Train with data.raft (retrieved excerpts in the training rows, as tuned+rag shows "
            "them), or use the tuned adapter without retrieval."
        )
    return mismatches, fixes


def conform(prompt: list[dict] | str, training: Layout | None) -> list[dict] | str:
    """Lay one request out as the adapter's training rows: the instruction-placement fix.

    Training with the instruction in the user turn (Alpaca): the request's system instruction
    becomes the user turn's first paragraph; retrieved excerpts stay in the system prompt when
    training had them there. Training with the instruction in the system turn: a request's
    leading user paragraph moves into the system prompt. Anything else is returned as it is.
    """
    if training is None or not isinstance(prompt, list):
        return prompt
    system = _system(prompt)
    turns = [dict(m) for m in prompt if m.get("role") != "system"]
    users = [i for i, m in enumerate(turns) if m.get("role") == "user"]
    if not users:
        return prompt
    last = turns[users[-1]]
    if training.instruction == "user turn" and system:
        instruction, header, excerpts = system.partition(EXCERPTS_HEADER)
        instruction = instruction.strip()
        if instruction:
            last["content"] = f"{instruction}\n\n{_text(last.get('content'))}"
        head = f"{header}{excerpts}".strip()
        return ([{"role": "system", "content": head}] if head else []) + turns
    content = _text(last.get("content"))
    if training.instruction == "system turn" and not system and "\n\n" in content:
        instruction, _, rest = content.partition("\n\n")
        last["content"] = rest
        return [{"role": "system", "content": instruction}, *turns]
    return prompt


def _placement(layout: Layout) -> str:
    system = "system prompt" if layout.system else "no system prompt"
    return f"{system}, instruction in the {layout.instruction}"


def run_dir_of(path: Path) -> Path | None:
    """The run directory an adapter path belongs to (the run itself or its adapter/), or None."""
    for folder in (path, path.parent):
        if (folder / "run.json").is_file() or (folder / "config.yaml").is_file():
            return folder
    return None


def training_rows_of(run: Path) -> tuple[list[dict], list[Path], bool]:
    """Return (task training rows, the files read, whether data.raft was on) of a run directory.

    Replay rows (general data mixed in against forgetting) are not the task's layout and are left out.
    """
    import yaml

    config = (
        yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    )
    data = (config or {}).get("data") or {}
    files = []
    for ref in data.get("train") or []:
        prepared = (
            Path(ref) if (Path(ref) / "manifest.json").is_file() else run / "data" / Path(ref).stem
        )
        if (prepared / "train.jsonl").is_file():
            files.append(prepared / "train.jsonl")
    if not files:  # a record written by another version: every manifest it lists but replay
        from specialize.evaluate.contamination import training_files_of

        files = [f for f in training_files_of(run) if "replay" not in f.parent.name]
    rows: list[dict] = []
    for path in files:
        with path.open(encoding="utf-8") as lines:
            rows += [json.loads(line) for line in islice(lines, _MOST_ROWS) if line.strip()]
    return rows, files, bool(data.get("raft"))


def _template(model_ref: str | None) -> str:
    return chat_template_id(model_ref) if model_ref else "chat template"


def chat_template_id(model_ref: str) -> str:
    """'chat template <sha12>' of a model's tokenizer (its ref when it cannot be read)."""
    try:
        from specialize.models.loading import resolve_model

        folder = resolve_model(model_ref).path
        config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    except Exception:  # noqa: BLE001 - an unreadable tokenizer only makes the label less precise
        return f"chat template of {model_ref}"
    template = config.get("chat_template")
    jinja = Path(folder) / "chat_template.jinja"  # where newer tokenizers keep it
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if not template:
        return "no chat template"
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return f"chat template {hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _system(messages: list[dict]) -> str:
    return next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")


def _last_user(messages: list[dict]) -> str:
    return next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )


def _text(content) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _shared_lead(users: list[str]) -> str:
    """The paragraph (or first words) most user turns open with; "" when they share none."""
    if len(users) < 2:
        return ""
    leads = Counter(_lead(u) for u in users if u.strip())
    if not leads:
        return ""
    lead, count = leads.most_common(1)[0]
    return lead if count >= 2 and count >= _SHARED_SHARE * len(users) else ""


def _lead(text: str) -> str:
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    if len(paragraphs) > 1:
        return " ".join(paragraphs[0].lower().split())
    return " ".join(text.lower().split()[:6])
