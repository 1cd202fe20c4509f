"""Load on `specialize serve`: concurrent OpenAI clients over the base and three adapters, against
the old one-request-at-a-time path, in one run.

    .venv/bin/python benchmarks/serve_load.py [--clients 8 --clients 32] [--requests 32]
        [--max-tokens 32] [--prompts 6] [--model smollm2-135m-instruct] [--adapter NAME=RUN_DIR ...]

Without --adapter it makes three random LoRA adapters on the model (so their answers differ
visibly) in a temporary home.

1. The old path: every distinct (model, prompt) request answered by `ModelHost.chat`
   (transformers' generate, one adapter selected, one request at a time under one lock, as the
   server did before the engine), from `--clients` threads at once. Its answers are the reference.
2. The engine through the server: for each --clients value, that many clients send --requests
   requests (half of them streaming) through the official `openai` package.

Each line reports req/s, p50/p95 latency, completion tokens/s, errors, answers identical to the
reference, and answers from the wrong adapter (differ from their own reference and match another
model's answer to the same prompt better). Exit status 1 on an error or a wrong-adapter answer.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = [
    "How do I block my card?",
    "What does an international transfer cost?",
    "When is my salary available?",
    "How long does a mortgage decision take?",
    "Can I open a joint account?",
    "What is the daily card limit?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=RUN_DIR (repeat)")
    parser.add_argument("--clients", type=int, action="append", default=[])
    parser.add_argument("--requests", type=int, default=32, help="requests per client count")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="distinct prompts used")
    args = parser.parse_args()
    clients = args.clients or [8, 32]
    if not args.adapter:
        home = tempfile.mkdtemp(prefix="serve-load-")
        # The default model materialises into this home (~500 MB): removed at exit, as each run
        # left one behind in /tmp before.
        atexit.register(shutil.rmtree, home, True)
        os.environ.setdefault("SPECIALIZE_HOME", home)

    from specialize.adapters import registry
    from specialize.adapters.host import ModelHost
    from specialize.models.generation import GenerationSettings

    names = []
    for spec in args.adapter or _random_adapters(args.model):
        name, _, path = spec.partition("=")
        registry.register(name, path, base_model=args.model, replace=True)
        names.append(name)
    host = ModelHost(args.model, names)
    models = ["base", *names]
    prompts = PROMPTS[: args.prompts]
    jobs = [(m, p) for p in prompts for m in models]
    settings = GenerationSettings(max_new_tokens=args.max_tokens)
    print(f"{args.model}: {', '.join(models)}; max_tokens {args.max_tokens}")

    expected, tokens = {}, {}

    def old(job):
        reply = host.chat(job[0], [{"role": "user", "content": job[1]}], settings)
        expected[job], tokens[job] = reply.text, reply.completion_tokens
        return reply.completion_tokens

    baseline = _load(old, jobs[: args.requests], clients[0])
    print(_line(f"old path, one at a time, {clients[0]} clients", baseline))
    missing = [job for job in jobs if job not in expected]
    for job in missing:  # references for requests the old path did not time
        old(job)

    distinct = min(len({expected[(m, p)] for m in models}) for p in prompts)
    print(f"the {len(models)} models give at least {distinct} different answers to every prompt")
    url = _start_server(host)
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    results = {}
    for count in clients:
        load = [jobs[i % len(jobs)] for i in range(args.requests)]
        answers = {}

        def new(job, index, answers=answers):
            messages = [{"role": "user", "content": job[1]}]
            if index % 2:
                stream = client.chat.completions.create(
                    model=job[0],
                    messages=messages,
                    max_tokens=args.max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                pieces, used = [], 0
                for chunk in stream:
                    if chunk.choices:
                        pieces.append(chunk.choices[0].delta.content or "")
                    if chunk.usage:
                        used = chunk.usage.completion_tokens
                answers[index] = "".join(pieces)
                return used
            reply = client.chat.completions.create(
                model=job[0], messages=messages, max_tokens=args.max_tokens
            )
            answers[index] = reply.choices[0].message.content
            return reply.usage.completion_tokens

        result = _load(new, load, count, indexed=True)
        result["same"] = sum(
            answers[i] == expected[job] for i, job in enumerate(load) if i in answers
        )
        result["wrong"] = sum(
            _wrong_adapter(answers[i], job, expected, models)
            for i, job in enumerate(load)
            if i in answers
        )
        results[count] = result
        print(_line(f"engine via server, {count} clients", result))
    first = results[clients[0]]
    print(
        f"at {clients[0]} clients: {first['rps'] / baseline['rps']:.1f}x the requests/s of the old "
        f"path, p50 latency {first['p50'] / baseline['p50']:.2f}x"
    )
    bad = any(r["errors"] or r["wrong"] for r in results.values())
    sys.exit(1 if bad else 0)


def _load(ask, jobs, clients: int, indexed: bool = False) -> dict:
    """Send the jobs from `clients` threads; time each and the whole."""
    latencies, errors, tokens = [], [], 0
    lock = threading.Lock()

    def one(item):
        nonlocal tokens
        index, job = item
        started = time.monotonic()
        try:
            used = ask(job, index) if indexed else ask(job)
        except Exception as exc:  # counted and reported, the load goes on
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            latencies.append(time.monotonic() - started)
            tokens += used

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, enumerate(jobs)))
    wall = time.monotonic() - started
    ok = len(latencies)
    p95 = statistics.quantiles(latencies, n=20)[18] if ok >= 2 else (latencies or [0])[0]
    return {
        "n": len(jobs),
        "ok": ok,
        "wall": wall,
        "rps": ok / wall,
        "p50": statistics.median(latencies) if ok else 0.0,
        "p95": p95,
        "tokens_per_s": tokens / wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def _line(label: str, r: dict) -> str:
    text = (
        f"{label}: n={r['n']} in {r['wall']:.1f} s, {r['rps']:.2f} req/s, p50 {r['p50']:.2f} s, "
        f"p95 {r['p95']:.2f} s, {r['tokens_per_s']:.1f} tokens/s, errors {r['errors']}"
    )
    if "same" in r:
        text += f", identical to the old path {r['same']}/{r['ok']}, wrong adapter {r['wrong']}"
    return text + (f" ({r['first_error']})" if r["errors"] else "")


def _wrong_adapter(answer: str, job, expected: dict, models: list[str]) -> bool:
    """The answer is not its own model's, and another model's answer to the prompt is closer."""
    if answer == expected[job]:
        return False
    own = _common_prefix(answer, expected[job])
    return any(_common_prefix(answer, expected[(m, job[1])]) > own for m in models if m != job[0])


def _common_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _random_adapters(model_ref: str, dora: bool = False) -> list[str]:
    """Three LoRA adapters with random weights: quick to make, and their answers differ. With
    `dora` the last is a DoRA adapter (which the engine runs on PEFT's own path, as its own group)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialize.models.loading import resolve_model

    specs = []
    for index, name in enumerate(("legal", "medical", "travel")):
        torch.manual_seed(index)
        base = AutoModelForCausalLM.from_pretrained(resolve_model(model_ref).path)
        model = get_peft_model(
            base,
            LoraConfig(
                r=8,
                lora_alpha=8,
                target_modules=["q_proj", "v_proj"],
                init_lora_weights=False,
                use_dora=dora and name == "travel",
            ),
        )
        folder = Path(os.environ["SPECIALIZE_HOME"]) / "adapters" / name
        model.save_pretrained(folder)
        specs.append(f"{name}={folder}")
    return specs


def _start_server(host) -> str:
    import socket

    import uvicorn

    from specialize.serve.app import create_app
    from specialize.serve.openai_api import Limits

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(host, Limits(max_in_flight=256, max_batch=32))
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    main()
