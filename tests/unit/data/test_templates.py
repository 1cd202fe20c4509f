"""The loss mask, token by token, on a rendered example with the real SmolLM2 chat template."""

from specialize.data.templates import mask_assistant_tokens, mask_row
from specialize.models.loading import load_tokenizer


def trained_text(tokenizer, masked):
    return tokenizer.decode([t for t, m in zip(masked.input_ids, masked.mask, strict=True) if m])


def test_only_assistant_tokens_are_trained(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    messages = [
        {"role": "system", "content": "You are Nordvik Bank's assistant."},
        {"role": "user", "content": "How do I block my card?"},
        {"role": "assistant", "content": "Open the app and tap Block card."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."},
    ]
    masked = mask_assistant_tokens(tokenizer, messages)
    rendered = tokenizer.apply_chat_template(messages, tokenize=True)
    rendered = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
    assert masked.input_ids == rendered
    assert masked.mask == expected_mask(tokenizer, masked.input_ids)
    assert (
        trained_text(tokenizer, masked)
        == "Open the app and tap Block card.<|im_end|>\nYou're welcome.<|im_end|>\n"
    )


def expected_mask(tokenizer, ids):
    """Walk ChatML token by token: `<|im_start|>ROLE\n` header, content, `<|im_end|>`, `\n`.

    Content and the closing `<|im_end|>\n` of assistant turns are trained; headers never are.
    """
    mask, state, role = [], "outside", ""
    for token in (tokenizer.decode([i]) for i in ids):
        if token == "<|im_start|>":
            state, role = "header", ""
            mask.append(0)
        elif state == "header":
            role += token
            mask.append(0)
            if role.endswith("\n"):
                state = "content"
        elif state == "content":
            mask.append(int(role.strip() == "assistant"))
            if token == "<|im_end|>":
                state = "closing"
        elif state == "closing":  # the newline that ends the turn
            mask.append(int(role.strip() == "assistant"))
            state = "outside"
        else:
            mask.append(0)
    return mask


def test_weight_zero_turn_is_not_trained(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bad old answer.", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Good answer."},
    ]
    assert (
        trained_text(tokenizer, mask_assistant_tokens(tokenizer, messages))
        == "Good answer.<|im_end|>\n"
    )


def test_prompt_completion_and_text_masks(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    completion = mask_row(tokenizer, {"prompt": "2+2=", "completion": "4"})
    assert trained_text(tokenizer, completion) == "4" + tokenizer.eos_token
    text = mask_row(tokenizer, {"text": "Raw domain text."})
    assert all(text.mask)
