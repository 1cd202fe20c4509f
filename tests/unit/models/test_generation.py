from specialize.models.generation import (
    GenerationSettings,
    chat_messages,
    generate_reply,
    stream_reply,
)
from specialize.models.loading import load_model


def test_greedy_is_deterministic_and_stream_matches_whole(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    messages = chat_messages("Hello there", system="Be brief.")
    settings = GenerationSettings(max_new_tokens=12)
    whole = generate_reply(model, tokenizer, messages, settings)
    assert whole == generate_reply(model, tokenizer, messages, settings)
    assert "".join(stream_reply(model, tokenizer, messages, settings)) == whole
    assert len(tokenizer(whole)["input_ids"]) <= 12


def test_sampling_with_seed_is_reproducible(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    messages = chat_messages("Tell me something")
    a = GenerationSettings(max_new_tokens=16, temperature=1.0, seed=7)
    b = GenerationSettings(max_new_tokens=16, temperature=1.0, seed=8)
    first = generate_reply(model, tokenizer, messages, a)
    assert first == generate_reply(model, tokenizer, messages, a)
    assert first != generate_reply(model, tokenizer, messages, b)


def test_chat_messages_order():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    msgs = chat_messages("c", "sys", history)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
