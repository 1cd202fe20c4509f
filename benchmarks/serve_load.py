"""Load on `specialize serve`: N concurrent OpenAI clients spread over the base and two adapters.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--requests 48] [--max-tokens 32]
        [--model smollm2-135m-instruct] [--adapter NAME=RUN_DIR --adapter NAME=RUN_DIR]

Without --adapter it makes two random LoRA adapters on the model (so their answers differ
visibly) in a temporary home. Every distinct request is first answered in-process, one after
another (the baseline: the same generation without a server); then the clients send the
requests through the official `openai` package. Prints throughput, p50/p95 latency, errors, and
whether every answer is the one its own adapter gives (greedy decoding makes that exact).
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--adapter", action="append", default=[], help="NAME=RUN_DIR (twice)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if not args.adapter:
        os.environ.setdefault("SPECIALIZE_HOME", tempfile.mkdtemp(prefix="serve-load-"))

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
    jobs = [
        (models[i % len(models)], PROMPTS[(i // len(models)) % len(PROMPTS)])
        for i in range(args.requests)
    ]
    settings = GenerationSettings(max_new_tokens=args.max_tokens)

    started = time.monotonic()
    expected = {}
    for job in sorted(set(jobs)):
        expected[job] = host.chat(job[0], [{"role": "user", "content": job[1]}], settings).text
    baseline_s = time.monotonic() - started
    baseline_rps = len(expected) / baseline_s
    distinct = {m: {expected[(m, p)] for p in PROMPTS if (m, p) in expected} for m in models}
    print(
        f"baseline: {len(expected)} distinct requests in-process, one by one: {baseline_s:.1f} s "
        f"({baseline_rps:.2f} req/s)"
    )
    print(
        f"answers differ between models: {len({tuple(sorted(v)) for v in distinct.values()}) == len(models)}"
    )

    url = _start_server(host)
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    latencies, errors, wrong = [], [], []
    lock = threading.Lock()

    def ask(job):
        model, prompt = job
        t0 = time.monotonic()
        try:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=args.max_tokens,
            )
        except Exception as exc:  # counted and reported, the load goes on
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            latencies.append(time.monotonic() - t0)
            if reply.choices[0].message.content != expected[job]:
                wrong.append(job)

    started = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(ask, jobs))
    wall = time.monotonic() - started
    ok = len(latencies)
    quantiles = (
        statistics.quantiles(latencies, n=20)
        if ok >= 2
        else [latencies[0]] * 19
        if ok
        else [0] * 19
    )
    print(
        f"load: {args.requests} requests, {args.clients} clients over {', '.join(models)}, max_tokens {args.max_tokens}"
    )
    print(
        f"  wall {wall:.1f} s, {ok / wall:.2f} req/s ({ok / wall / baseline_rps:.2f}x the in-process baseline)"
    )
    print(
        f"  latency p50 {statistics.median(latencies) if ok else 0:.2f} s, p95 {quantiles[18]:.2f} s"
    )
    print(f"  errors {len(errors)}{': ' + errors[0] if errors else ''}")
    print(f"  answers from the wrong adapter: {len(wrong)} of {ok}")
    sys.exit(1 if wrong or errors else 0)


def _random_adapters(model_ref: str) -> list[str]:
    """Two LoRA adapters with random weights: quick to make, and their answers differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialize.models.loading import resolve_model

    specs = []
    for index, name in enumerate(("legal", "medical")):
        torch.manual_seed(index)
        base = AutoModelForCausalLM.from_pretrained(resolve_model(model_ref).path)
        model = get_peft_model(
            base,
            LoraConfig(
                r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
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
    server = uvicorn.Server(
        uvicorn.Config(create_app(host, Limits(max_in_flight=256)), port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    main()
