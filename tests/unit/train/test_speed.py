"""Speed settings change no result: TRL's fused head on labelled positions only gives the same loss,
gradients and logged metrics as scoring every position."""

import torch

from specialize.models.loading import load_model


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_labelled_positions_only_gives_the_same_loss_and_gradients(tiny_model_dir):
    from trl.trainer import utils

    from specialize.train.speed import score_labelled_positions_only

    model, _ = load_model(str(tiny_model_dir))
    utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=generator)
    labels = ids.clone()
    labels[0, :15] = -100  # a prompt, as SFT masks it
    labels[1, :5] = -100
    labels[1, 20:] = -100
    batch = {"input_ids": ids, "labels": labels}
    original = utils._use_triton
    try:
        every, every_grads = _loss_and_grads(model, batch)
        score_labelled_positions_only()
        assert utils._use_triton(torch.device("cpu")) is True
        only, only_grads = _loss_and_grads(model, batch)
    finally:
        utils._use_triton = original
    assert torch.allclose(every.loss, only.loss, atol=1e-6)
    assert torch.allclose(every.entropy, only.entropy, atol=1e-5)
    assert torch.equal(every.is_top1, only.is_top1) and torch.equal(
        every.label_mask, only.label_mask
    )
    assert every_grads.keys() == only_grads.keys() and every_grads
    for name, grad in every_grads.items():
        assert torch.allclose(grad, only_grads[name], atol=1e-6), name


def test_varlen_attention_gives_each_packed_document_its_own_result(tiny_model_dir):
    """Packed documents attended one by one: the logits of each document alone and of the
    block-masked sdpa row, and the same gradients; padded batches still go through plain sdpa."""
    from specialize.train.speed import VARLEN_SDPA, use_varlen_attention

    model, _ = load_model(str(tiny_model_dir))
    lengths = [9, 13, 6]
    ids = torch.randint(
        0, model.config.vocab_size, (1, sum(lengths)), generator=torch.Generator().manual_seed(1)
    )
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    labels = ids.clone()

    def run():
        model.zero_grad()
        out = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False)
        out.loss.backward()
        return out.logits.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }

    masked_logits, masked_grads = run()
    with torch.no_grad():
        alone = torch.cat(
            [model(input_ids=part, use_cache=False).logits for part in ids.split(lengths, dim=1)],
            dim=1,
        )
    use_varlen_attention(model)
    assert model.config._attn_implementation == VARLEN_SDPA
    varlen_logits, varlen_grads = run()
    assert torch.allclose(varlen_logits, masked_logits, atol=1e-5)
    assert torch.allclose(varlen_logits, alone, atol=1e-5)
    bounds = torch.tensor(
        [0, 9, 22, 28], dtype=torch.int32
    )  # as TRL's padding-free collator sends them
    with torch.no_grad():
        given = model(
            input_ids=ids,
            position_ids=positions,
            cu_seq_lens_q=bounds,
            cu_seq_lens_k=bounds,
            use_cache=False,
        ).logits
    assert torch.equal(given, varlen_logits)
    for name, grad in masked_grads.items():
        assert torch.allclose(grad, varlen_grads[name], atol=1e-5), name
    padded = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        varlen_padded = model(input_ids=padded, attention_mask=mask).logits
        model.config._attn_implementation = "sdpa"
        plain_padded = model(input_ids=padded, attention_mask=mask).logits
    assert torch.allclose(varlen_padded, plain_padded, atol=1e-6)
