"""The Nordvik generator: reproducible, and no test item ever reaches train."""

import importlib.util
import json

from specialize.data.curate import normalise_text
from tests.conftest import REPO

NORDVIK = REPO / "examples" / "nordvik"
_spec = importlib.util.spec_from_file_location("nordvik_generate", NORDVIK / "generate.py")
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)
FACTS = generator.FACTS


def _rows(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def _user(row):
    return normalise_text(row["messages"][1]["content"]).lower()


def test_the_shipped_data_is_what_the_generator_writes_with_its_seed(tmp_path):
    seed = json.loads((NORDVIK / "data" / "generator.json").read_text())["seed"]
    generator.generate(seed, tmp_path)
    for split in ("train", "val", "test", "preferences"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (
            NORDVIK / "data" / f"{split}.jsonl"
        ).read_bytes()


def test_no_test_item_reaches_train_for_any_seed(tmp_path):
    for seed in (0, 1, 7, 123):
        out = tmp_path / str(seed)
        generator.generate(seed, out)
        train, test = _rows(out, "train"), _rows(out, "test")
        assert not {_user(r) for r in train} & {_user(r) for r in test}
        # held-out paraphrases: no test phrasing or message template is used in train
        assert not {r.get("template") for r in train if "template" in r} & {
            r.get("template") for r in test if "template" in r
        }
        docs_only = set(json.loads((out / "generator.json").read_text())["docs_only_facts"])
        assert docs_only and not docs_only & {r["fact_id"] for r in train if r["task"] == "policy"}
        assert docs_only <= {r["fact_id"] for r in test if r["task"] == "policy"}


def test_every_answer_is_written_in_its_document():
    for fact_id, doc, answers, _, phrasings in FACTS:
        text = " ".join((NORDVIK / "docs" / f"{doc}.md").read_text().split())
        assert any(a in text for a in answers), fact_id
        assert len(set(phrasings)) == 4, fact_id


def test_structured_references_are_json_in_the_taxonomy():
    for row in _rows(NORDVIK / "data", "test"):
        if row["task"] == "structured":
            reply = json.loads(row["messages"][-1]["content"])
            assert set(reply) == {"category", "priority", "reply"}
            assert reply["category"] in generator.CATEGORIES
            assert reply["reply"].endswith(generator.SIGN_OFF)
