"""SparseGPT's column sweep as a PyTorch loop (any device; the reference's arithmetic, bit for bit)."""

from __future__ import annotations

import torch


def torch_sweep(W1, U1, d1, mask1, nm):
    """One block's column sweep: prune column i (its mask entries to 0) and push the error onto the
    block's later columns, one column at a time. Returns the pruned block and its errors (rows x width).

    The PyTorch loop works on the block transposed, so that each column is a contiguous row (faster on a
    CPU), and writes every result in place: the error straight into its row, the rank-1 update's products
    into one buffer. The arithmetic is the reference's, element by element, so the result is bit-identical
    to it: ``err = (w - q) / d`` is ``w / d`` where pruned and 0 elsewhere, column i needs no update of its
    own, and the pruned entries are zeroed once at the end (no later step reads them: column j's update
    uses only the errors, and an N:M group is scored from the columns not yet swept). Multiply, subtract and
    divide are separate operations, each rounded (no fused multiply-add), which the C loop
    (:mod:`.sweep_c`) and the Triton kernel (:mod:`.sweep_triton`) do too.
    """
    W1 = W1.t().contiguous()
    Err1 = torch.empty_like(W1)
    product = torch.empty_like(W1)  # the rank-1 update's terms, written in place (no allocation per column)
    mask_t = mask1.t().contiguous()
    step = _torch_column_step(W1, Err1, product, mask_t, U1, d1)
    for i in range(W1.shape[0]):
        if nm is not None and i % nm[1] == 0:  # N:M: the group's N smallest scores, chosen now
            lowest = _lowest_in_group(W1[i : i + nm[1]].t(), d1[i : i + nm[1]], nm[0])
            mask_t.scatter_(0, (i + lowest).t(), True)
        step(i)
    W1.masked_fill_(mask_t, 0)
    return W1.t(), Err1.t().contiguous()


def _lowest_in_group(group, d, n):
    """N:M inside the sweep: for each row of ``group`` (rows x M, the group's columns as they are now),
    the indices within the group of its ``n`` smallest ``w**2 / d**2``. The scores are made contiguous
    before ``torch.topk``, so every column loop hands it the same tensor and gets the same choice."""
    scores = (group**2 / d.unsqueeze(0) ** 2).contiguous()
    return torch.topk(scores, n, dim=1, largest=False).indices


def _torch_column_step(W1, Err1, product, mask_t, U1, d1):
    """Column i's step on the transposed block: the error row, then the later columns minus its rank-1
    products (in place, without a host synchronisation)."""
    zero = torch.zeros((), dtype=W1.dtype, device=W1.device)
    columns, errors, masks, diagonal = W1.unbind(0), Err1.unbind(0), mask_t.unbind(0), d1.unbind(0)
    U1_columns = U1.unsqueeze(2)  # U1_columns[i, i + 1 :] is U1[i, i + 1 :] as a column

    def step(i):
        err = errors[i]
        torch.where(masks[i], columns[i], zero, out=err)
        err.div_(diagonal[i])
        later = product[i + 1 :]
        torch.mul(U1_columns[i, i + 1 :], err, out=later)  # the same products, rounded the same way
        W1[i + 1 :].sub_(later)

    return step
