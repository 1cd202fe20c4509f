"""The batching engine: rows for different adapters in one forward give the answers each request
gets alone; sampling, stop conditions, cancellation and the bounded queue work per row."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from specialize.adapters.engine import Engine, Job, QueueFull
from specialize.errors import ModelError
from specialize.models.generation import GenerationSettings, render_prompt_ids

ADAPTERS = ("creative", "terse", "formal")
PROMPTS = [
    "Hi",
    "How do I block my card?",
    "What does an international transfer to a joint account opened last year cost, in euros?",
    "Tell me",
]


# each adapter: its target modules and LoRA settings (ranks, alphas and rsLoRA differ, so the
# stacked path must pad ranks and keep each adapter's own scaling)
LORA = {
    "creative": ("all-linear", {"r": 4, "lora_alpha": 16}),
    "terse": (["q_proj", "v_proj"], {"r": 8, "lora_alpha": 8, "use_rslora": True}),
    "formal": (["o_proj", "down_proj"], {"r": 2, "lora_alpha": 6}),
}


def random_adapter(model_dir, folder, seed, targets, **settings):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(target_modules=targets, init_lora_weights=False, **settings)
    get_peft_model(model, config).save_pretrained(folder)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_model_dir):
    """One host with three random adapters (different target modules) and its engine."""
    from specialize.adapters import registry
    from specialize.adapters.host import ModelHost

    home = tmp_path_factory.mktemp("engine-home")
    old = os.environ.get("SPECIALIZE_HOME")
    os.environ["SPECIALIZE_HOME"] = str(home)
    try:
        for seed, name in enumerate(ADAPTERS):
            targets, settings = LORA[name]
            random_adapter(tiny_model_dir, home / name, seed, targets, **settings)
            registry.register(name, home / name, base_model=str(tiny_model_dir))
        # a DoRA adapter, registered but loaded only by the test of PEFT's fallback path
        random_adapter(
            tiny_model_dir,
            home / "dora",
            9,
            ["q_proj", "up_proj"],
            r=4,
            lora_alpha=8,
            use_dora=True,
        )
        registry.register("dora", home / "dora", base_model=str(tiny_model_dir))
        host = ModelHost(str(tiny_model_dir), list(ADAPTERS))
    finally:
        os.environ.pop("SPECIALIZE_HOME") if old is None else os.environ.update(SPECIALIZE_HOME=old)
    engine = Engine(host, max_batch=16, max_in_flight=24)
    yield engine
    engine.stop()


def job(engine, model, prompt, tokens=10, **settings):
    ids = render_prompt_ids(engine.host.tokenizer, [{"role": "user", "content": prompt}])
    stop = tuple(settings.pop("stop", ()))
    return Job(model, ids, GenerationSettings(max_new_tokens=tokens, **settings), stop)


def wait_idle(engine, seconds=30):
    deadline = time.monotonic() + seconds
    while engine.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    return engine.in_flight


def test_mixed_batches_answer_exactly_as_each_request_alone(engine, monkeypatch):
    from specialize.adapters import decode_linear

    kernel_rows = []  # rows per call of the small-batch kernel (when it could be built here)
    real = decode_linear.linear
    monkeypatch.setattr(
        decode_linear,
        "linear",
        lambda x, w, b=None: kernel_rows.append(x.numel() // x.shape[-1]) or real(x, w, b),
    )
    models = ["base", *ADAPTERS]
    alone = {(m, p): engine.run(job(engine, m, p)).generated for m in models for p in PROMPTS}
    for prompt in PROMPTS:  # the adapters really answer differently
        assert len({tuple(alone[(m, prompt)]) for m in models}) == len(models), prompt
    # the host's own one-request path (transformers' generate, one adapter active) agrees
    for model in models:
        reply = engine.host.chat(
            model, [{"role": "user", "content": PROMPTS[1]}], GenerationSettings(max_new_tokens=10)
        )
        assert reply.text == engine.host.tokenizer.decode(
            alone[(model, PROMPTS[1])], skip_special_tokens=True
        )

    # everything at once: one prefill of 16 mixed, left-padded rows, then shared decode steps
    kernel_rows.clear()
    together = [(m, p, engine.submit(job(engine, m, p))) for p in PROMPTS for m in models]
    assert wait_idle(engine) == 0
    for model, prompt, done in together:
        assert done.generated == alone[(model, prompt)], (model, prompt)
    if decode_linear.kernel() is not None:  # the decoding steps of 16 rows went through it
        assert 16 in kernel_rows

    # a prompt prefilled from its first token and the same prompt reusing its stored prefix
    engine._prefixes.clear()
    fresh = engine.run(job(engine, "terse", PROMPTS[2])).generated
    hits = engine._prefixes.hits
    assert engine.run(job(engine, "terse", PROMPTS[2])).generated == fresh
    assert engine._prefixes.hits > hits

    # continuous batching: rows join a running batch between steps, with other lengths
    first = [
        (m, p, engine.submit(job(engine, m, p, tokens=60)))
        for m, p in zip(models, PROMPTS, strict=True)
    ]
    while not any(done.generated for _, _, done in first):
        time.sleep(0.002)
    later = [
        (m, p, engine.submit(job(engine, m, p))) for m, p in zip(models[::-1], PROMPTS, strict=True)
    ]
    assert not any(done.left.is_set() for _, _, done in first)  # they joined a running batch
    assert wait_idle(engine) == 0
    for model, prompt, done in later:
        assert done.generated == alone[(model, prompt)]
    for model, prompt, done in first:
        assert done.generated[:10] == alone[(model, prompt)]
        assert len(done.generated) == 60 and done.finish_reason == "length"


def test_decoding_steps_write_the_cache_in_place_and_rows_leave_in_place(engine, monkeypatch):
    """Between joins the KV cache is one buffer: a decoding step writes its new column into the
    room kept past the rows (no copy of the cache per step), a finished row's leaving moves the
    others up in it, and when the room runs out it grows by CACHE_ROOM; answers stay exact."""
    from specialize.adapters import engine as engine_module

    monkeypatch.setattr(engine_module, "CACHE_ROOM", 4)
    alone = {p: engine.run(job(engine, "creative", p, tokens=9)).generated for p in PROMPTS[:3]}
    driver = Engine(engine.host, max_batch=4, max_in_flight=8)
    driver.stop()  # this test drives its steps
    jobs = [job(engine, "creative", p, tokens=9) for p in PROMPTS[:3]]
    jobs[0].settings = GenerationSettings(max_new_tokens=3)  # leaves first
    buffers, sizes = [], []
    with engine.host._lock:
        driver._step(jobs)  # the prefill, joined into a cache with 4 positions of room
        while driver._active:
            layer = driver._batch[0].layers[0]
            buffers.append(layer._keys.data_ptr())
            sizes.append((layer._keys.shape[0], layer.keys.shape[-2], layer._keys.shape[-2]))
            driver._step([])
    # steps 1-4 fill the room of the first buffer (a row leaving after step 2 stays in it); step 5
    # grows it by 4 positions, as does step 9
    assert len(set(buffers[:5])) == 1 and buffers[5] != buffers[4], (buffers, sizes)
    assert sizes[2][0] == 2 and sizes[5][2] == sizes[0][2] + 4, sizes
    assert jobs[0].generated == alone[PROMPTS[0]][:3]
    for prompt, done in zip(PROMPTS[1:3], jobs[1:], strict=True):
        assert done.generated == alone[prompt]


def test_stop_strings_and_streamed_pieces(engine):
    full = engine.run(job(engine, "creative", PROMPTS[2], tokens=12))
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[4:7]
    cut = full.text[: full.text.find(stop)]
    pieces = list(engine.stream(job(engine, "creative", PROMPTS[2], tokens=12, stop=[stop])))
    assert "".join(pieces) == cut  # nothing of the stop string leaks out, even partially


def test_sampling_is_per_row_and_seeded(engine):
    def sample(seed, crowd=0):
        others = [
            engine.submit(job(engine, "terse", PROMPTS[1], temperature=1.0)) for _ in range(crowd)
        ]
        mine = engine.run(
            job(engine, "base", PROMPTS[0], tokens=12, temperature=1.5, top_p=0.9, seed=seed)
        )
        wait_idle(engine)
        assert all(o.finish_reason for o in others)
        return mine.generated

    assert sample(3) == sample(3, crowd=5)  # other sampling rows do not touch this row's generator
    assert sample(3) != sample(4)


def test_cancelled_rows_leave_and_the_queue_is_bounded(engine):
    jobs = [engine.submit(job(engine, m, PROMPTS[2], tokens=500)) for m in ("base", *ADAPTERS)]
    jobs += [engine.submit(job(engine, "base", PROMPTS[0], tokens=500)) for _ in range(20)]
    with pytest.raises(QueueFull) as full:
        engine.submit(job(engine, "base", PROMPTS[0]))
    assert full.value.retry_after >= 1 and "limit 24" in full.value.one_line()
    for running in jobs:
        running.cancel()
    assert wait_idle(engine, 5) == 0
    assert all(len(j.generated) < 500 for j in jobs)
    # the engine still answers, and exactly as before
    assert engine.run(job(engine, "terse", PROMPTS[1])).finish_reason == "length"


def test_prompt_plus_max_tokens_over_the_context_is_refused_before_generating(engine):
    long = job(engine, "base", "word " * 2100, tokens=10)
    with pytest.raises(ModelError) as error:
        engine.submit(long)
    message = error.value.one_line()
    assert f"{len(long.prompt_ids)} tokens" in message and "max_tokens is 10" in message
    assert "context of 2048" in message and engine.in_flight == 0


def test_a_failing_step_fails_its_rows_and_the_engine_keeps_serving(engine):
    bad = job(engine, "base", PROMPTS[0])
    bad.prompt_ids = [10**7]  # no such token: the embedding lookup fails inside the forward
    errors = []
    done = threading.Event()

    def notify(event):
        if event.kind != "text":
            errors.append(event)
            done.set()

    bad.notify = notify
    engine.submit(bad)
    assert done.wait(10) and errors[0].kind == "error"
    assert engine.run(job(engine, "base", PROMPTS[1])).finish_reason == "length"
    # no hook of the failed forward is left behind: the host's one-request path still works
    reply = engine.host.chat(
        "terse", [{"role": "user", "content": PROMPTS[1]}], GenerationSettings(max_new_tokens=4)
    )
    assert reply.completion_tokens == 4


def test_unloading_an_adapter_fails_only_its_running_rows(engine, monkeypatch):
    from specialize.adapters import registry

    home = Path(engine.host.adapters["formal"]["path"]).parent  # where the fixture registered it
    monkeypatch.setenv("SPECIALIZE_HOME", str(home))
    doomed = engine.submit(job(engine, "formal", PROMPTS[2], tokens=400))
    other = engine.submit(job(engine, "terse", PROMPTS[2], tokens=40))
    while not doomed.generated:
        time.sleep(0.002)
    engine.host.unload("formal")
    with pytest.raises(ModelError, match="was unloaded"):
        engine.wait(doomed, 10)
    assert engine.wait(other, 30).finish_reason == "length" and len(other.generated) == 40
    assert registry.get("formal")["name"] == "formal"
    engine.host.load("formal")
    assert engine.run(job(engine, "formal", PROMPTS[0])).finish_reason == "length"


def test_stacked_lora_equals_peft_mixed_batches_in_both_modes(engine):
    """One forward of a mixed, left-padded batch: the stacked path (gather + bmm, and grouped by
    adapter) gives PEFT's own logits, row by row, for adapters of different ranks and targets."""
    from specialize.adapters.batched_lora import BatchedLora

    host, tokenizer = engine.host, engine.host.tokenizer
    rows = ["base", *ADAPTERS, "terse", "creative", "base", "formal"]
    prompts = [
        render_prompt_ids(tokenizer, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
        for i in range(len(rows))
    ]
    width = max(map(len, prompts))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :], mask[row, width - len(prompt) :] = torch.tensor(prompt), 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def logits(**extra):
        with torch.inference_mode():
            out = host.model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra)
        return out.logits[mask.bool()]  # the prompt tokens' logits, padding left out

    with host._lock:  # the engine's thread must not step while this test uses the model
        peft = logits(adapter_names=["__base__" if r == "base" else r for r in rows])
        for mode in ("gather", "group"):
            lora = BatchedLora(host.model, list(ADAPTERS), mode)
            assert lora.supported(rows) and not lora.unsupported
            # creative targets every linear layer; the others add to the same layers' stacks
            assert len(lora.layers) == 2 * 7
            assert lora.layers[0].a.shape[0] == len(ADAPTERS) + 1  # a zero slot for the base
            assert (
                max(layer.a.shape[2] for layer in lora.layers) == 8
            )  # ranks padded to the largest
            with lora.rows(rows) as extra:
                stacked = logits(**extra)
            torch.testing.assert_close(stacked, peft, rtol=1e-5, atol=1e-5)
        # the hooks are gone after the block: PEFT's own path is untouched
        torch.testing.assert_close(
            logits(adapter_names=["__base__" if r == "base" else r for r in rows]), peft
        )


def test_dora_rows_fall_back_to_peft_and_still_answer_as_alone(engine, monkeypatch):
    from specialize.adapters import engine as engine_module
    from specialize.adapters import registry
    from specialize.models import kv_cache

    monkeypatch.setenv("SPECIALIZE_HOME", str(Path(engine.host.adapters["terse"]["path"]).parent))
    engine.host.load("dora")
    try:
        alone = {m: engine.run(job(engine, m, PROMPTS[2])).generated for m in ("dora", "terse")}
        assert engine._lora[1].unsupported == {"dora": "DoRA"}
        assert not engine._lora[1].supported(["base", "dora"])
        assert engine._lora[1].supported(["base", "terse"])
        reply = engine.host.chat(
            "dora", [{"role": "user", "content": PROMPTS[2]}], GenerationSettings(max_new_tokens=10)
        )
        assert reply.text == engine.host.tokenizer.decode(alone["dora"], skip_special_tokens=True)
        decoding, copied, windowed = [], [], []  # whether each group's copy was in a decoding step

        def decode():
            decoding.append(True)
            try:
                return engine_decode()
            finally:
                decoding.pop()

        def select_rows(cache, index):
            copied.append(bool(decoding))
            return select(cache, index)

        def windows(cache, blocks, new):
            found = row_windows(cache, blocks, new)
            windowed.append(found is not None)
            return found

        select, row_windows = engine_module._select_rows, kv_cache.row_windows
        engine_decode = engine._decode
        monkeypatch.setattr(engine, "_decode", decode)
        monkeypatch.setattr(engine_module, "_select_rows", select_rows)
        monkeypatch.setattr(kv_cache, "row_windows", windows)
        together = [engine.submit(job(engine, m, PROMPTS[2])) for m in ("dora", "terse", "dora")]
        assert wait_idle(engine) == 0
        assert [j.generated for j in together] == [alone["dora"], alone["terse"], alone["dora"]]
        # the dora rows were put next to each other as they joined: only the prompts' prefills
        # ran each group on a copy, every decoding step wrote each group's rows in place
        assert copied and not any(copied)
        assert any(windowed)
    finally:
        engine.host.unload("dora")
    assert registry.get("dora")["name"] == "dora"
