"""The comparison page in headless chromium, simultaneous submissions, pairs from a model, export."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from specialize.feedback import identity, store
from specialize.feedback.export import export
from specialize.feedback.pairs import make_pairs, read_prompts
from specialize.feedback.store import Pair, pair_id
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_FLAGS
from tests.integration.test_serve import _start

XSS = '<img src=x onerror="window.pwned=1"><b>bold</b>'


def _pairs(count=4):
    pairs = []
    for i in range(count):
        prompt = [{"role": "user", "content": f"Question {i}: how do I block my card?"}]
        first, second = f"Answer one to {i}. {XSS if i == 0 else ''}", f"Answer two to {i}."
        pairs.append(
            Pair(
                pair_id(prompt, "legal", "base", first, second),
                prompt,
                first,
                second,
                "legal",
                "base",
            )
        )
    return pairs


@pytest.fixture
def page_server(home):
    from specialize.serve.app import create_app
    from specialize.serve.feedback_api import FeedbackSession

    store.add_pairs("s1", _pairs())
    server, thread, url = _start(create_app(feedback=FeedbackSession("s1")))
    yield url
    server.should_exit = True
    thread.join(10)


def test_a_person_labels_with_the_keyboard_undoes_and_exports(page_server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Debian's chromium is needed: scripts/setup.sh installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        assert page.goto(page_server + "/feedback").status == 401  # no token, no page
        assert page.goto(page_server + "/feedback?token=forged.abc").status == 401
        page.goto(page_server + "/feedback?token=" + identity.issue("s1", "ada"))
        page.wait_for_function("document.getElementById('who').textContent === 'Labelling as ada'")
        progress = page.locator("#progress")
        progress.wait_for()
        page.wait_for_function(
            "document.getElementById('progress').textContent.startsWith('0 / 4')"
        )
        assert (
            XSS in page.locator("#a").inner_text()
        )  # model output shown as text, never run as HTML
        assert page.evaluate("window.pwned") is None and page.locator("#a img").count() == 0

        for key, expected in (("a", "1 / 4"), ("b", "2 / 4"), ("t", "3 / 4")):
            page.locator("body").press(key)
            page.wait_for_function(
                f"document.getElementById('progress').textContent.startsWith('{expected}')"
            )
        page.locator("body").press("u")  # undo the tie
        page.wait_for_function(
            "document.getElementById('progress').textContent.startsWith('2 / 4')"
        )
        page.fill("#corrected", "Block it in the app under Cards > Block.")
        page.keyboard.press("Escape")  # leave the text box
        page.keyboard.press("x")  # both bad, with the correction
        page.wait_for_function(
            "document.getElementById('progress').textContent.startsWith('3 / 4')"
        )
        browser.close()

    summary = export(tmp_path / "prefs.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert summary["labels"] == 3 and summary["rows"] == len(rows) == 4 and summary["skipped"] == {}
    assert [r["choice"] for r in rows] == ["a", "b", "both_bad", "both_bad"]
    assert (
        rows[0]["chosen"][0]["content"].startswith("Answer one to 0")
        and rows[0]["chosen_source"] == "legal"
    )
    assert (
        rows[1]["chosen"][0]["content"] == "Answer two to 1."
        and rows[1]["rejected_source"] == "legal"
    )
    assert rows[2]["chosen"][0]["content"] == "Block it in the app under Cards > Block."
    assert {r["rejected"][0]["content"] for r in rows[2:]} == {
        "Answer one to 2. ",
        "Answer two to 2.",
    }


def test_the_export_is_valid_preference_data(home, tmp_path):
    from specialize.data.validate import check_files

    store.add_pairs("s2", _pairs(2))
    for pair in _pairs(2):
        store.label(pair.id, "ada", "a")
    export(tmp_path / "prefs.jsonl", "s2")
    summary = check_files([tmp_path / "prefs.jsonl"])
    assert summary.rows == summary.valid == 2 and summary.kinds == {"preference": 2}
    assert not summary.errors


def test_export_reports_as_json(cli, home, tmp_path):
    store.add_pairs("s3", _pairs(3))
    for pair, choice in zip(_pairs(3), ["a", "b", "tie"], strict=True):
        store.label(pair.id, "ada", choice)
    code, out, err = cli(
        "feedback", "export", "--out", tmp_path / "p.jsonl", "--session", "s3", "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["labels"] == 3 and summary["rows"] == 2 and summary["skipped"] == {"tie": 1}
    assert summary["out"] == str(tmp_path / "p.jsonl") and summary["annotators"] == ["ada"]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_simultaneous_submissions_neither_lose_nor_double_labels(home):
    pairs = _pairs(3)
    store.add_pairs("s3", pairs)
    barrier = threading.Barrier(8)

    def submit(i):
        barrier.wait()
        try:
            store.label(pairs[0].id, "same-person", "a")
            return "stored"
        except store.AlreadyLabelled:
            return "duplicate"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert outcomes.count("stored") == 1 and outcomes.count("duplicate") == 7

    barrier = threading.Barrier(12)

    def many(i):
        barrier.wait()
        store.label(pairs[1].id, f"person-{i}", "a" if i % 3 else "b")

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(many, range(12)))
    labels = [label for label in store.live_labels("s3") if label["pair_id"] == pairs[1].id]
    assert len(labels) == 12 and len({label["annotator"] for label in labels}) == 12
    from specialize.feedback.export import agreement

    export_summary = agreement(store.live_labels("s3"))
    assert (
        export_summary["pairs_with_two_or_more"] == 1
        and 0 < export_summary["percent_agreement"] < 100
    )


def test_pairs_come_from_two_adapters_or_two_samples_in_recorded_random_order(
    home, tiny_model_dir, tmp_path
):
    from specialize.adapters.host import ModelHost

    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(
        "".join(json.dumps({"prompt": f"Tell me about fee {i}."}) + "\n" for i in range(8))
    )
    prompts = read_prompts(prompts_file)
    pairs = make_pairs(ModelHost(str(tiny_model_dir)), prompts, ["base"], max_new_tokens=8)
    assert len(pairs) == 8 and all(p.first != p.second for p in pairs)
    assert {p.first_source for p in pairs} == {
        "base#sample1",
        "base#sample2",
    }  # order drawn per pair


def test_a_second_labeller_cannot_undo_the_first_ones_label(page_server):
    import urllib.error
    import urllib.request

    def call(path, token, body=None):
        request = urllib.request.Request(
            page_server + path,
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={"X-Feedback-Token": token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    ada, bob = identity.issue("s1", "ada"), identity.issue("s1", "bob")
    pair = call("/api/feedback/next", ada)[1]["pair"]["id"]
    assert call("/api/feedback/label", ada, {"pair_id": pair, "choice": "a"})[0] == 200
    # the name is the token's, never the request's: a declared annotator is refused
    status, _ = call(
        "/api/feedback/label", bob, {"pair_id": pair, "choice": "b", "annotator": "ada"}
    )
    assert status == 422  # unknown field "annotator"
    assert call("/api/feedback/undo", bob, {}) == (200, {"undone": None, "annotator": "bob"})
    assert call("/api/feedback/me", ada)[1]["annotator"] == "ada"
    assert [(x["annotator"], x["choice"]) for x in store.live_labels("s1")] == [("ada", "a")]
    assert call("/api/feedback/undo", identity.issue("other-session", "ada"), {})[0] == 401
    assert call("/api/feedback/undo", ada, {})[1]["undone"] == pair
    assert store.live_labels("s1") == []
