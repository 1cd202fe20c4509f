"""`specialize ui` in headless chromium (Playwright driving Debian's chromium): the runs table
lists the runs, filters and sorts, opens a report with its plots, and compares two runs."""

import threading
import time
from pathlib import Path

import pytest
import yaml

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(cli, tiny_recipe, tmp_path):
    import socket

    import uvicorn

    from specialize.serve.app import create_app

    for name, lr in (("alpha-run", 1e-3), ("beta-run", 5e-3)):
        recipe = tiny_recipe(
            training={"learning_rate": lr, "epochs": 1},
            output={"dir": str(tmp_path / name), "name": name},
            retention={"suite": "none"},
        )
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
        assert cli("train", tmp_path / f"{name}.yaml", "--no-progress")[0] == 0
    assert cli("runs", "tag", "beta-run", "<b>bold</b>")[0] == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), (
        "Debian's chromium is needed: scripts/setup.sh installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


def test_the_dashboard_lists_filters_sorts_and_opens_reports(server, browser):
    page = browser.new_page()
    page.goto(server + "/")
    rows = page.locator("#runs tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    names = page.locator("#runs tbody tr td:nth-child(2)")
    assert sorted(names.all_inner_texts()) == ["alpha-run", "beta-run"]
    assert page.get_by_text("<b>bold</b>").count() == 1  # a tag is text, never markup
    assert page.locator("#runs tbody b").count() == 0

    page.locator("th[data-key=name]").click()
    assert names.all_inner_texts() == ["alpha-run", "beta-run"]
    page.locator("th[data-key=name]").click()
    assert names.all_inner_texts() == ["beta-run", "alpha-run"]

    page.fill("#filter", "alpha")
    assert rows.count() == 1 and names.all_inner_texts() == ["alpha-run"]
    page.fill("#filter", "")

    page.locator("tr", has_text="alpha-run").get_by_role("link", name="report").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Run alpha-run"
    assert page.locator("img").count() >= 2
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

    page.go_back()
    rows.first.wait_for()
    for name in ("alpha-run", "beta-run"):
        page.get_by_label(f"select {name}").check()
    page.click("#compare")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Compare runs"
    assert page.get_by_text("training.learning_rate").count() >= 1
    page.close()


def test_unknown_runs_are_404_and_paths_are_not_accepted(server):
    import urllib.error
    import urllib.request

    for path in ("/runs/nope/report", "/runs/..%2F..%2Fetc%2Fpasswd/report"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server + path)
        assert error.value.code == 404
        error.value.close()


def test_a_run_whose_folder_was_deleted_answers_404_with_the_reason(server):
    import json
    import shutil
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(server + "/api/runs") as response:
        run = next(r for r in json.loads(response.read()) if r["name"] == "alpha-run")
    shutil.rmtree(run["path"])
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server + f"/runs/{run['id']}/report")
    assert error.value.code == 404 and "was deleted" in error.value.read().decode()
    error.value.close()
