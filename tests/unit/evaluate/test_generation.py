"""Greedy generation: the shared-prefix, finished-rows-leave loop gives generate's tokens exactly."""

import pytest
import torch

from specialize.evaluate import runner
from specialize.models.generation import GenerationSettings

SYSTEM = "You are a support assistant. Answer in one short sentence with the exact amount."
QUESTIONS = [
    "What does the card cost?",
    "How long does a transfer abroad take when I send money to Norway on a Friday evening?",
    "Fee?",
    "Can I open an account for my child, and what documents should I bring to the branch?",
    "Where is your nearest office to Lund these days?",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """A random Llama with the real tokenizer, its weights wide enough that replies vary by prompt.

    (The shared tiny test model answers every prompt with the same repeated token, which would
    let a loop that mixed rows up pass.)
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from specialize.models.tiny import tiny_llama_config

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = tiny_llama_config(
        len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        initializer_range=0.4,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def generated_by_both(model, rows, max_new_tokens):
    """(generate's ids, the greedy loop's ids) per row, generate's trimmed at its first stop."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    stops = runner._stops(model)
    with torch.inference_mode():
        old = runner._generate_chunk(model, _Pad(), rows, settings)
        new = runner._greedy_chunk(model, rows, runner._shared_prefix(rows), max_new_tokens, stops)
    return [_until_stop(o, stops) for o in old], new


class _Pad:
    pad_token_id = 2


def _until_stop(ids, stops):
    for at, token in enumerate(ids):
        if token in stops:
            return ids[: at + 1]
    return ids


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert runner._shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert runner._shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert runner._shared_prefix([[7, 2], [1, 2]]) == 0
    assert runner._shared_prefix([[5, 6, 7]]) == 2


@pytest.mark.parametrize("shared_system", [True, False])
def test_greedy_loop_matches_generate_token_for_token(tiny, shared_system):
    model, tokenizer = tiny
    if shared_system:
        prompts = [
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            for q in QUESTIONS
        ]
    else:  # raw text with different first tokens: no shared prefix, plain left padding
        prompts = [q for q in QUESTIONS]
    rows = [runner.prompt_ids(tokenizer, p) for p in prompts]
    shared = runner._shared_prefix(rows)
    assert (shared > 20) if shared_system else shared == 0
    assert len({len(r) for r in rows}) == len(rows)  # mixed lengths: every row padded differently
    old, new = generated_by_both(model, rows, 12)
    assert new == old


@pytest.mark.parametrize("group_tokens", [1, 60])
def test_prompts_run_in_length_groups_give_generates_tokens(tiny, monkeypatch, group_tokens):
    """Each group writes its own rows of the shared cache, padded only to its own longest."""
    from specialize.models.kv_cache import rows_of

    model, tokenizer = tiny
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]
    rows = sorted((runner.prompt_ids(tokenizer, p) for p in prompts), key=len)
    monkeypatch.setattr(runner, "PREFILL_GROUP_TOKENS", group_tokens)
    windows = []

    def spy(cache, start, stop, length):
        windows.append((start, stop))
        return rows_of(cache, start, stop, length)

    monkeypatch.setattr(runner, "rows_of", spy)
    old, new = generated_by_both(model, rows, 12)
    assert new == old
    assert len(windows) > 1 and windows[0][0] == 0  # several groups, from the first row on
    if group_tokens == 1:
        assert len(windows) == len(rows)


def test_a_cache_that_cannot_be_windowed_takes_the_prompts_in_one_group(tiny, monkeypatch):
    """Models with sliding-window layers: one padded group, written into the cache directly."""
    model, tokenizer = tiny
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]
    rows = [runner.prompt_ids(tokenizer, p) for p in prompts]
    monkeypatch.setattr(runner, "allocated_cache", lambda *args: None)
    monkeypatch.setattr(runner, "PREFILL_GROUP_TOKENS", 1)
    old, new = generated_by_both(model, rows, 12)
    assert new == old


def test_length_groups_keep_each_groups_padded_size_within_the_budget(monkeypatch):
    monkeypatch.setattr(runner, "PREFILL_GROUP_TOKENS", 10)
    assert runner._length_groups([2, 3, 4, 5, 20, 1]) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert runner._length_groups([30]) == [(0, 1)]  # a row longer than the budget runs alone


def test_rows_finishing_at_different_steps_leave_the_batch_with_the_same_tokens(tiny):
    model, tokenizer = tiny
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]
    rows = [runner.prompt_ids(tokenizer, p) for p in prompts]
    old, _ = generated_by_both(model, rows, 16)
    # Make tokens the tiny model emits at different steps end a reply, so rows stop at 2, 5, 9...
    stops = {old[0][1], old[1][4], old[2][8]}
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = sorted(stops)
    try:
        old, new = generated_by_both(model, rows, 16)
    finally:
        model.generation_config.eos_token_id = original
    assert new == old
    lengths = sorted(len(o) for o in new)
    assert lengths[0] < 16 and len(set(lengths)) >= 3  # rows really finished at different steps

    # End to end: generate_batch's replies (in the prompts' order) equal generate's.
    settings = GenerationSettings(max_new_tokens=16)
    model.generation_config.eos_token_id = sorted(stops)
    try:
        fast = runner.generate_batch(model, tokenizer, prompts, settings, batch_size=2)
        runner_greedy, runner._plain_greedy = runner._plain_greedy, lambda *_: False
        try:
            slow = runner.generate_batch(model, tokenizer, prompts, settings, batch_size=2)
        finally:
            runner._plain_greedy = runner_greedy
    finally:
        model.generation_config.eos_token_id = original
    assert fast == slow


def test_sampling_and_extra_processors_go_through_generate(tiny):
    model, _ = tiny
    assert runner._plain_greedy(model, GenerationSettings())
    assert not runner._plain_greedy(model, GenerationSettings(temperature=0.7, seed=1))
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not runner._plain_greedy(model, GenerationSettings())
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_greedy_replies_do_not_depend_on_the_batch_size(tiny):
    model, tokenizer = tiny
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]
    settings = GenerationSettings(max_new_tokens=10)
    replies = [
        runner.generate_batch(model, tokenizer, prompts, settings, batch_size=size)
        for size in (1, 2, 64)
    ]
    assert replies[0] == replies[1] == replies[2]
    assert len(set(replies[0])) == len(prompts)  # the replies differ: rows were not mixed up


def test_a_cache_too_small_for_the_reply_grows_and_gives_the_same_tokens(tiny, monkeypatch):
    model, tokenizer = tiny
    prompts = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]
    rows = [runner.prompt_ids(tokenizer, p) for p in prompts]
    built = []

    def small(model, batch, capacity, prompt):
        built.append(runner_cache(model, batch, 3, prompt))  # no room for the reply: it grows
        return built[-1]

    runner_cache = runner.allocated_cache
    monkeypatch.setattr(runner, "allocated_cache", small)
    old, new = generated_by_both(model, rows, 12)
    assert new == old
    assert built[0].layers[0]._keys.shape[-2] >= max(len(r) for r in rows) + 11
