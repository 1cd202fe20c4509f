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
