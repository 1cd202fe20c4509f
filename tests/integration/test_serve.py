"""Many specialists on one base: registry, the OpenAI-compatible server (through the official
`openai` client), isolation under concurrent mixed requests, limits, merge and export."""

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml

from specialize.adapters import registry as adapters
from tests.conftest import SUPPORT_DATA
from tests.unit.adapters.test_engine import random_adapter

API_KEY = "test-key"
ADMIN_KEY = "admin-key"


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    """A home with two trained tiny adapters, `legal` and `medical`, registered by their runs."""
    import os

    from specialize.cli.main import main

    home = tmp_path_factory.mktemp("serve-home")
    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(home)
    try:
        for name, lr in (("legal", 5e-3), ("medical", 2e-2)):
            recipe = {
                "model": str(tiny_model_dir),
                "method": "sft",
                "data": {"train": [str(SUPPORT_DATA)]},
                "training": {
                    "epochs": 2,
                    "batch_size": 4,
                    "learning_rate": lr,
                    "max_length": 256,
                    "seed": 7,
                },
                "eval": {"every_steps": 2, "patience": None},
                "retention": {"suite": "none"},
                "output": {"dir": str(home / "runs" / name), "name": name},
            }
            file = home / f"{name}.yaml"
            file.write_text(yaml.safe_dump(recipe))
            assert main(["train", str(file), "--no-progress"]) == 0
        for index, name in enumerate(
            ("creative", "terse")
        ):  # random LoRA weights: answers differ visibly
            random_adapter(
                tiny_model_dir, home / "adapters" / name, index, "all-linear", r=4, lora_alpha=16
            )
            adapters.register(name, home / "adapters" / name, base_model=str(tiny_model_dir))
    finally:
        if old is None:
            os.environ.pop("SPECIALIZE_HOME")
        else:
            os.environ["SPECIALIZE_HOME"] = old
    return home


@pytest.fixture
def served(store, monkeypatch):
    monkeypatch.setenv("SPECIALIZE_HOME", str(store))
    return store


def _start(app):
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def server(served, tiny_model_dir):
    from specialize.adapters.host import ModelHost
    from specialize.serve.app import create_app
    from specialize.serve.openai_api import Limits

    host = ModelHost(str(tiny_model_dir), ["creative", "terse"])
    app = create_app(
        host,
        Limits(
            max_tokens=24,
            max_body_bytes=20_000,
            max_in_flight=64,
            api_key=API_KEY,
            admin_key=ADMIN_KEY,
        ),
    )
    instance, thread, url = _start(app)
    yield url, host
    instance.should_exit = True
    thread.join(10)


def test_runs_register_their_adapters_and_another_base_is_refused(
    served, tiny_model_dir, default_model_dir, cli, tmp_path
):
    from specialize.models.tiny import save_tiny_model

    entries = {e["name"]: e for e in adapters.list_all()}
    assert set(entries) == {"legal", "medical", "creative", "terse"}
    legal = entries["legal"]
    assert (
        legal["method"] == "sft"
        and legal["base_model"] == str(tiny_model_dir)
        and len(legal["base_hash"]) == 64
    )
    assert legal["hyperparameters"]["r"] == 16 and legal["hyperparameters"]["learning_rate"] == 5e-3
    assert legal["size_bytes"] > 0 and legal["data_hash"]
    code, out, _ = cli("adapters", "list")
    assert code == 0 and "4 adapter(s)" in out and "legal" in out
    code, out, _ = cli("adapters", "list", "--json")
    assert {e["name"] for e in json.loads(out)} == set(entries)

    other_base = tmp_path / "other-tiny"
    save_tiny_model(other_base, default_model_dir, seed=1)
    code, _, err = cli(
        "adapters", "register", "legal-2", served / "runs" / "legal", "--model", other_base
    )
    assert code == 1 and "trained on another base" in err
    code, _, err = cli(
        "adapters", "register", "../evil", served / "runs" / "legal", "--model", tiny_model_dir
    )
    assert code == 1 and "invalid adapter name" in err


def test_openai_client_base_and_two_adapters_streaming_and_not(server):
    from openai import OpenAI

    url, _ = server
    client = OpenAI(base_url=url + "/v1", api_key=API_KEY)
    assert sorted(m.id for m in client.models.list()) == ["base", "creative", "terse"]
    answers = {}
    for model in ("base", "creative", "terse"):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "How do I block my card?"}],
            max_tokens=16,
        )
        answers[model] = reply.choices[0].message.content
        assert reply.model == model and reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "How do I block my card?"}],
            max_tokens=16,
            stream=True,
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert streamed.strip() == answers[model].strip()
    assert len(set(answers.values())) == 3  # three specialists, three different answers
    completion = client.completions.create(model="terse", prompt="The bank", max_tokens=8)
    assert completion.choices[0].text and completion.model == "terse"


def test_concurrent_mixed_requests_each_get_their_own_adapter(server):
    from openai import OpenAI

    url, host = server
    client = OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
    prompts = [f"Question number {i}: what does a transfer cost?" for i in range(4)]
    expected = {}
    for model in ("base", "creative", "terse"):
        for prompt in prompts:
            expected[(model, prompt)] = host.chat(
                model, [{"role": "user", "content": prompt}], _settings(12)
            ).text
    jobs = [
        (model, prompt)
        for _ in range(3)
        for model in ("base", "creative", "terse")
        for prompt in prompts
    ]

    def ask(job):
        model, prompt = job
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=12
        )
        return job, reply.choices[0].message.content

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(ask, jobs))
    assert len(results) == 36
    assert all(text == expected[job] for job, text in results)


def _settings(tokens):
    from specialize.models.generation import GenerationSettings

    return GenerationSettings(max_new_tokens=tokens)


def test_bad_requests_get_clear_4xx(server):
    import openai
    from openai import OpenAI

    url, _ = server
    client = OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
    message = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="tax", messages=message)
    with pytest.raises(openai.BadRequestError, match="looks like a path"):
        client.chat.completions.create(model="/tmp/adapter", messages=message)
    with pytest.raises(openai.BadRequestError, match="over this server's limit"):
        client.chat.completions.create(model="base", messages=message, max_tokens=1000)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    big = json.dumps(
        {"model": "base", "messages": [{"role": "user", "content": "x" * 50_000}]}
    ).encode()
    assert _post(url + "/v1/chat/completions", big)[0] == 413
    status, body = _post(url + "/admin/adapters", json.dumps({"name": "tax"}).encode())
    assert status == 401 and "admin key" in body  # the inference key cannot load adapters
    status, body = _post(
        url + "/admin/adapters", json.dumps({"name": "../../etc/passwd"}).encode(), ADMIN_KEY
    )
    assert status == 400 and "never by path" in body
    status, body = _post(url + "/admin/adapters", json.dumps({"name": "tax"}).encode(), ADMIN_KEY)
    assert status == 404 and "no adapter named 'tax'" in body


def test_admin_unloads_and_loads_by_name(server):
    url, _ = server
    request = urllib.request.Request(
        url + "/admin/adapters/terse",
        method="DELETE",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["models"] == ["base", "creative"]
    status, body = _post(url + "/admin/adapters", json.dumps({"name": "terse"}).encode(), ADMIN_KEY)
    assert status == 200 and json.loads(body)["models"] == ["base", "creative", "terse"]
    status, body = _post(url + "/admin/adapters", json.dumps({"name": "legal"}).encode(), ADMIN_KEY)
    assert status == 200 and "legal" in json.loads(body)["models"]
    with urllib.request.urlopen(url + "/health") as response:
        assert json.loads(response.read()) == {"status": "ok"}  # liveness, nothing more


def _post(url, data, key=API_KEY):
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_merged_export_matches_the_adapter_and_the_peft_export_is_what_vllm_loads(
    served, tiny_model_dir, cli, tmp_path
):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specialize.adapters.export import VLLM_TARGETS

    entry = adapters.get("legal")
    ids = torch.tensor([[1, 520, 2001, 3000, 45, 9]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, entry["path"]).eval()(ids).logits

    assert cli("adapters", "merge", "legal", "--out", tmp_path / "merged")[0] == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template

    assert (
        cli("adapters", "export", "legal", "--format", "peft", "--out", tmp_path / "peft")[0] == 0
    )
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
    assert set(config["target_modules"]) <= VLLM_TARGETS and not config.get("modules_to_save")
    with safe_open(tmp_path / "peft" / "adapter_model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and all(
        k.startswith("base_model.model.model.layers.") and (".lora_A." in k or ".lora_B." in k)
        for k in keys
    )
    assert AutoTokenizer.from_pretrained(tmp_path / "peft").chat_template
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "peft"
    ).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
    code, _, err = cli("adapters", "export", "legal", "--format", "onnx", "--out", tmp_path / "x")
    assert code == 2 and "expected one of peft, merged, gguf" in err


def test_adapters_do_not_interfere_when_served_together(served, tiny_model_dir, cli):
    code, out, err = cli(
        "adapters", "check", "legal", "creative", "terse", "--model", tiny_model_dir, "--items", "6"
    )
    assert code == 0, err
    assert "no interference" in out and "6/6" in out
