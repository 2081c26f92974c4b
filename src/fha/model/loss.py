"""Cross-entropy of a linear output layer, computed in row chunks without the full logits.

With a large vocabulary and a small model width the (N, V) logits tensor dominates the
memory traffic of a training step: at seq 512, batch 32 and vocab 8192 it is 512 MB in
float32, written by the output layer, read and written again by log-softmax and by its
backward. Here each chunk of rows gets its logits, its loss and, when gradients are needed,
its gradients with respect to the hidden states and the weight straight away; only those
(N, C) and (V, C) gradients are kept for the backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fha.model.dtypes import at_least_float32

ROWS_PER_CHUNK = 2048
IGNORE_INDEX = -100  # target value that is skipped (torch.nn.functional.cross_entropy's default)


def counted_targets(targets: Tensor, pad_id: int | None) -> Tensor:
    """Where a target counts in the loss: it is neither IGNORE_INDEX nor, when `pad_id` is
    given, padding. A boolean tensor shaped like `targets`."""
    counted = targets != IGNORE_INDEX
    return counted if pad_id is None else counted & (targets != pad_id)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, rows_per_chunk: int) -> Tensor:
        # hidden: (N, C), weight: (V, C), targets: (N,) with IGNORE_INDEX for skipped rows
        valid = targets != IGNORE_INDEX  # (N,)
        count = valid.sum()
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        hidden_in = hidden.to(weight.dtype)
        acc = at_least_float32(weight.dtype)  # softmax and sums in at least float32
        grad_hidden = torch.zeros_like(hidden_in) if needs_grad else None  # (N, C)
        grad_weight = torch.zeros_like(weight, dtype=acc) if needs_grad else None  # (V, C)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            h = hidden_in[rows]  # (n, C)
            logits = (h @ weight.t()).to(acc)  # (n, V)
            lse = logits.logsumexp(dim=-1)  # (n,)
            keep = valid[rows]  # (n,)
            safe_targets = targets[rows].clamp(min=0)  # (n,)
            target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1)  # (n,)
            total += ((lse - target_logits) * keep).sum()
            if grad_hidden is not None and grad_weight is not None:  # needs_grad
                probs = (logits - lse[:, None]).exp_()  # (n, V) softmax
                probs.scatter_add_(1, safe_targets[:, None], -torch.ones_like(lse)[:, None])
                probs *= keep[:, None]
                grad_hidden[rows] = (probs.to(weight.dtype) @ weight).to(grad_hidden.dtype)  # (n, C)
                grad_weight += probs.t() @ h.to(acc)  # (V, C)
        loss = total / count
        if grad_hidden is not None and grad_weight is not None:  # needs_grad
            ctx.save_for_backward(grad_hidden / count, grad_weight / count)
            ctx.input_dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.input_dtypes
        return (
            (grad_hidden * grad_loss).to(hidden_dtype),
            (grad_weight * grad_loss).to(weight_dtype),
            None,
            None,
        )


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, rows_per_chunk: int = ROWS_PER_CHUNK
) -> Tensor:
    """Mean cross-entropy of logits ``hidden @ weight.T`` against targets, ignoring -100.

    hidden: (..., C); weight: (V, C); targets: (...). Equal to
    ``F.cross_entropy((hidden @ weight.T).flatten(0, -2), targets.flatten(), ignore_index=-100)``.
    """
    return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), rows_per_chunk)
