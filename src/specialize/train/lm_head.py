"""The LM head's log-probabilities for a frozen head on a CPU: one pass over the vocabulary, not three.

TRL's fused head (`trl.kernels.ChunkedLogProbFunction`) never holds the [tokens, vocabulary] logits
at once: the forward folds vocabulary tiles into running statistics, and the backward projects every
tile again to turn it into the gradient. That costs three [tokens x hidden x 49k] products and a
dozen elementwise passes over the tiles; on this CPU it was about a quarter of a LoRA SFT step.

When the head is frozen (LoRA, prompt tuning: no weight gradient) the gradient of a token's
log-probability with respect to its hidden state is known in the forward: d log p_t / dh =
scale * (W[t] - p @ W). So each block of tokens is projected once, its softmax taken, and that
vector kept ([tokens, hidden], small); the backward only scales it by the incoming gradient. Two
products instead of three, the logits of one block of tokens alive at a time. The entropy's
gradient (used by no SFT loss, only logged) is computed by re-projecting, as TRL does.

The outputs (log-probability, entropy, mean logit, whether the target is the top-1) are TRL's, to
float rounding; the mean logit and the top-1 flags are for logging, without gradient, as in TRL.
"""

from __future__ import annotations

import torch

# Tokens per block. A block's tiles (logits, log-probabilities, probabilities: [64, 49152], 6 MiB
# each in bf16) are alive at the step's peak, when every layer's activations are: blocks of 256
# peaked ~90 MiB higher in a LoRA SFT run of SmolLM2-135M, for ~3% less head time.
TOKENS_PER_BLOCK = 64


class FrozenHeadLogProbs(torch.autograd.Function):
    """log p(target), entropy, mean logit and top-1 flags of `hidden @ weight.T * scale`, for a
    weight without grad."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale):
        ctx.set_materialize_grads(False)
        n = hidden.shape[0]
        log_probs = hidden.new_empty(n, dtype=torch.float32)
        entropy = hidden.new_empty(n, dtype=torch.float32)
        mean_logits = hidden.new_empty(n, dtype=torch.float32)
        is_top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        direction = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        product_weight = _product_weight(weight)
        for start in range(0, n, TOKENS_PER_BLOCK):
            block = slice(start, min(start + TOKENS_PER_BLOCK, n))
            target = targets[block]
            logits = _logits(hidden[block], product_weight, scale)
            mean_logits[block] = logits.mean(-1)
            logp = torch.log_softmax(logits, dim=-1)
            del logits  # one [block, vocabulary] tile fewer alive
            log_probs[block] = logp.gather(1, target[:, None])[:, 0]
            is_top1[block] = _is_first_maximum(logp, target, log_probs[block])
            probs = logp.exp()
            entropy[block] = -torch.linalg.vecdot(probs, logp)  # -sum p log p, without a temporary
            # d log p_t / d h = scale * (W[t] - p @ W)
            row = weight.index_select(0, target).float()
            direction[block] = (row - probs @ product_weight) * scale
        ctx.save_for_backward(hidden, weight, targets, direction, entropy)
        ctx.scale = scale
        ctx.mark_non_differentiable(mean_logits, is_top1)
        return log_probs, entropy, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, targets, direction, entropy = ctx.saved_tensors
        grad = torch.zeros_like(direction)
        if grad_log_probs is not None:
            grad += grad_log_probs.float()[:, None] * direction
        if grad_entropy is not None:
            grad += _entropy_grad(hidden, weight, ctx.scale, entropy, grad_entropy.float())
        return grad.to(hidden.dtype), None, None, None


def _is_first_maximum(scores, target, at_target):
    """scores.argmax(-1) == target without argmax's pass (on this CPU 25 ms for a [256, 49152]
    bf16 tile, against 1.5 ms for amax): the target holds the row's maximum, and where another
    entry holds it too, the target comes first. `at_target`: scores at the targets (any dtype)."""
    best = scores.amax(-1)
    top = at_target.to(best.dtype) == best
    rows = top.nonzero()[:, 0]
    if rows.numel():
        tied = (scores[rows] == best[rows, None]).sum(-1) > 1  # rare: argmax takes the first
        if tied.any():
            ties = rows[tied]
            top[ties] = scores[ties].argmax(-1) == target[ties]
    return top


def _logits(hidden, product_weight, scale):
    logits = hidden.float() @ product_weight.t()
    return logits.mul_(scale) if scale != 1.0 else logits


def _product_weight(weight):
    """The head's weight as its products take it: fp32, or under CPU autocast its kept copy."""
    from specialize.train.speed import frozen_autocast_copy

    if not (weight.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        return weight.float()
    return frozen_autocast_copy(weight, torch.get_autocast_dtype("cpu"))


def _entropy_grad(hidden, weight, scale, entropy, grad_entropy):
    """d entropy / d h, block by block: dH/dz_j = -p_j (log p_j + H), through the head."""
    grad = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    product_weight = _product_weight(weight)
    for start in range(0, hidden.shape[0], TOKENS_PER_BLOCK):
        block = slice(start, min(start + TOKENS_PER_BLOCK, hidden.shape[0]))
        logp = torch.log_softmax(_logits(hidden[block], product_weight, scale), dim=-1)
        dz = -logp.exp() * (logp + entropy[block, None]) * grad_entropy[block, None]
        grad[block] = (dz @ product_weight) * scale
    return grad


def applies(hidden, weight, bias, temperature, softcapping, outputs) -> bool:
    """Whether FrozenHeadLogProbs computes what TRL was asked for (else TRL's own kernel runs)."""
    return (
        hidden.device.type == "cpu"
        and not weight.requires_grad
        and bias is None
        and softcapping is None
        and temperature > 0
        and set(outputs) <= {"log_probs", "entropy", "mean_logits", "is_top1"}
    )


class CpuHead:
    """Drop-in for TRL's ChunkedLogProbFunction (its `apply` signature and five outputs)."""

    def __init__(self, trl_function):
        self.trl_function = trl_function

    def apply(self, *args):
        """TRL's positional arguments: hidden, weight, bias, targets, temperature, chunk_size,
        softcapping, logit_scale, outputs (the last three optional)."""
        defaults = (None, 1.0, ("log_probs",))
        hidden, weight, bias, targets, temperature, _, softcapping, logit_scale, outputs = (
            *args,
            *defaults[len(args) - 6 :],
        )
        if not applies(hidden, weight, bias, temperature, softcapping, outputs):
            return self.trl_function.apply(*args)
        log_probs, entropy, mean_logits, is_top1 = FrozenHeadLogProbs.apply(
            hidden, weight, targets, logit_scale / temperature
        )
        return (
            log_probs,
            entropy if "entropy" in outputs else None,
            None,  # log_sum_sq_probs: not computed here (`applies` sends those calls to TRL's)
            mean_logits if "mean_logits" in outputs else None,
            is_top1 if "is_top1" in outputs else None,
        )
