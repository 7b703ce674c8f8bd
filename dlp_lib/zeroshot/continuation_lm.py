"""An lm-eval HFLM whose output layer runs only on the positions a batch's continuations are read from.

lm-eval scores a choice from the log-probabilities of its continuation tokens, but asks the model for the
logits (and takes the log-softmax over the whole vocabulary) at every position of every padded row. On a
small model the output layer is a large part of the work: on the embedded SmolLM2-135M (49,152 tokens,
hidden size 576) it is about a fifth of the matrix products and, with the log-softmax, about a quarter of
the time of the seven tasks. Here each row's leading positions that no continuation reads are skipped with
transformers' ``logits_to_keep``; lm-eval finds the continuation in a shorter logits tensor by the same
arithmetic (``inplen + logits length - padded length``), so every score is the one the whole tensor gives.
"""

from __future__ import annotations

import inspect

import torch

# a row is known by its first tokens (right-padded with lm-eval's pad id 0 where it is shorter): rows that
# share them share the smallest skip of any request with that prefix, so a collision only skips less
KEY_TOKENS = 16


def row_key(tokens) -> tuple[int, ...]:
    """The first :data:`KEY_TOKENS` tokens of a model input row, padded with zeros as lm-eval pads rows."""
    head = [int(t) for t in tokens[:KEY_TOKENS]]
    return tuple(head + [0] * (KEY_TOKENS - len(head)))


def keeps_logits(model) -> bool:
    """Whether ``model.forward`` takes transformers' ``logits_to_keep`` (LLaMA, Mistral, Qwen2, OPT do)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def continuation_lm_class():
    """The HFLM subclass (built on first use: lm-eval is imported only when zero-shot runs)."""
    from lm_eval.models.huggingface import HFLM

    class ContinuationLM(HFLM):
        """HFLM computing logits only from the first position any continuation of the batch needs."""

        _skips: dict | None = None

        def _loglikelihood_tokens(self, requests, *args, **kwargs):
            if not keeps_logits(self.model):  # the whole logits tensor, as HFLM computes it
                return super()._loglikelihood_tokens(requests, *args, **kwargs)
            skips = {}
            for _, context_enc, continuation_enc in requests:
                # the row lm-eval builds: context and continuation, left-truncated, last token dropped
                row = (context_enc + continuation_enc)[-(self.max_length + 1) :][:-1]
                skip = max(0, len(row) - len(continuation_enc))
                key = row_key(row)
                skips[key] = min(skip, skips.get(key, skip))
            self._skips = skips
            try:
                return super()._loglikelihood_tokens(requests, *args, **kwargs)
            finally:
                self._skips = None

        def batch_skip(self, inps: torch.Tensor) -> int:
            """Leading positions no row of ``inps`` reads a continuation from (0 when any row is unknown)."""
            if not self._skips:
                return 0
            skips = [self._skips.get(row_key(row)) for row in inps.tolist()]
            return 0 if None in skips else min(skips)

        def _model_call(self, inps, attn_mask=None, labels=None):
            skip = self.batch_skip(inps) if attn_mask is None and labels is None else 0
            if skip == 0:
                return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
            with (
                torch.no_grad(),
                torch.autocast(
                    device_type=self.device.type,
                    dtype=self.mixed_precision_dtype,
                    enabled=self.mixed_precision_dtype is not None,
                ),
            ):
                return self.model(inps, logits_to_keep=inps.shape[1] - skip).logits

    return ContinuationLM
