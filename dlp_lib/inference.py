"""What sparsity buys at inference: N:M pattern checks, and the decoder linears in sparse storage.

Two paths, because the hardware decides what a sparse weight can buy:

- **2:4 on a GPU** (:func:`to_semi_structured`): every decoder linear's weight becomes PyTorch's
  semi-structured tensor (``torch.sparse.to_sparse_semi_structured``; cuSPARSELt or CUTLASS kernels,
  fp16/bf16, CUDA only) after :func:`check_nm_pattern` has verified the 2:4 pattern.
- **Any sparsity on a CPU** (:func:`to_sparse_format`): every decoder linear becomes a
  :class:`SparseLinear` holding its weight in one of PyTorch's sparse layouts (CSR, CSC, COO),
  multiplied with ``torch.sparse.mm``.

Neither promises a speed-up: ``bench/speedup.py`` measures it, slow-downs included. Both keep the
weights' values exactly (:func:`sparse_weight` round-trips bit for bit), so outputs differ from the dense
model's only by the order of the floating-point sums.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ConfigError
from .layers import decoder_blocks, linear_sublayers

CPU_FORMATS = ("csr", "csc", "coo")
SEMI_STRUCTURED_BACKENDS = ("cusparselt", "cutlass")


class PatternError(ConfigError):
    """A weight that is not the N:M pattern a sparse kernel needs."""


# ------------------------------------------------------------------------------------- pattern checks
def nm_violations(weight: torch.Tensor, n: int = 2, m: int = 4) -> tuple[int, int, tuple[int, int] | None]:
    """``(groups with fewer than n zeros, all groups, (row, first column) of the first such group)`` over
    the groups of ``m`` consecutive input columns of each row of ``weight`` (out x in)."""
    if not 0 < n < m:
        raise ConfigError(f"an N:M pattern needs 0 < N < M; got {n}:{m}")
    rows, cols = weight.shape
    if cols % m:
        raise PatternError(f"input size {cols} is not a multiple of M={m}: no {n}:{m} pattern is possible")
    zeros = (weight.detach().reshape(rows, cols // m, m) == 0).sum(dim=-1)
    bad = zeros < n
    count = int(bad.sum())
    first = None
    if count:
        row, group = (int(i) for i in torch.nonzero(bad)[0])
        first = (row, group * m)
    return count, int(bad.numel()), first


def check_nm_pattern(model: nn.Module, n: int = 2, m: int = 4) -> int:
    """Raise :class:`PatternError` naming the first decoder linear (block and name) whose weight is not
    N:M sparse (at least ``n`` zeros in every group of ``m`` consecutive inputs of a row), with where and
    how often; return the number of linears checked."""
    checked = 0
    for index, block in enumerate(decoder_blocks(model)):
        for name, linear in linear_sublayers(block).items():
            try:
                count, total, first = nm_violations(linear.weight, n, m)
            except PatternError as err:
                raise PatternError(f"block {index} {name}: {err}") from None
            if count:
                row, col = first
                raise PatternError(
                    f"block {index} {name} is not {n}:{m} sparse: {count} of {total} groups of {m} weights have "
                    f"fewer than {n} zeros (the first at row {row}, columns {col}-{col + m - 1}); prune it with "
                    f"--sparsity_type {n}:{m} first"
                )
            checked += 1
    return checked


# ------------------------------------------------------------------------------------ CPU sparse formats
def sparse_weight(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """``weight`` (out x in) in sparse layout ``fmt`` (one of :data:`CPU_FORMATS`); its ``to_dense()``
    equals ``weight`` bit for bit."""
    weight = weight.detach()
    if fmt == "csr":
        return weight.to_sparse_csr()
    if fmt == "csc":
        return weight.to_sparse_csc()
    if fmt == "coo":
        return weight.to_sparse_coo().coalesce()
    raise ConfigError(f"unknown sparse format {fmt!r}; use one of {', '.join(CPU_FORMATS)}")


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes a (dense, sparse or semi-structured) weight occupies: values plus indices or metadata."""
    layout = tensor.layout
    if layout == torch.strided and not _is_semi_structured(tensor):
        return tensor.numel() * tensor.element_size()
    if layout == torch.sparse_coo:
        parts = [tensor.indices(), tensor.values()]
    elif layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    elif layout in (torch.sparse_csc, torch.sparse_bsc):
        parts = [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    else:  # semi-structured: the kept values and their metadata (one or both orientations)
        names = ("packed", "meta", "packed_t", "meta_t", "compressed_swizzled_bitmask")
        parts = [getattr(tensor, name) for name in names if getattr(tensor, name, None) is not None]
    return sum(p.numel() * p.element_size() for p in parts)


class SparseLinear(nn.Module):
    """A linear layer whose weight is stored in a sparse layout; ``y = x W^T + b`` via ``torch.sparse.mm``.

    The weight is kept in fp32 (CPU sparse kernels have no bf16/fp16 product); inputs are cast to it and
    the output back to the input's dtype."""

    def __init__(self, linear: nn.Linear, fmt: str):
        super().__init__()
        self.in_features, self.out_features, self.fmt = linear.in_features, linear.out_features, fmt
        self.weight = sparse_weight(linear.weight.to(torch.float32), fmt)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.float32)
        out = torch.sparse.mm(self.weight, flat.t()).t()  # (out x in) @ (in x tokens), then back
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt}"


def to_sparse_format(model: nn.Module, fmt: str = "csr") -> int:
    """Replace every decoder linear of ``model`` (on the CPU) by a :class:`SparseLinear` in layout
    ``fmt``, in place; return the number replaced. Embeddings and the LM head stay dense."""
    if fmt not in CPU_FORMATS:
        raise ConfigError(f"unknown sparse format {fmt!r}; use one of {', '.join(CPU_FORMATS)}")
    replaced = 0
    for block in decoder_blocks(model):
        for name, linear in linear_sublayers(block).items():
            if linear.weight.device.type != "cpu":
                raise ConfigError(f"{name} is on {linear.weight.device}: the sparse formats here are for CPU models")
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, SparseLinear(linear, fmt))
            replaced += 1
    return replaced


# -------------------------------------------------------------------------------- 2:4 on a GPU (CUDA)
def _is_semi_structured(tensor: torch.Tensor) -> bool:
    try:
        from torch.sparse import SparseSemiStructuredTensor
    except ImportError:  # pragma: no cover - torch without the prototype API
        return False
    return isinstance(tensor, SparseSemiStructuredTensor)


def semi_structured_unavailable(device: torch.device | str | None = None) -> str | None:
    """Why PyTorch's semi-structured 2:4 kernels cannot run here (None when they can be tried)."""
    if not torch.cuda.is_available():
        return "semi-structured 2:4 kernels need a CUDA GPU; this machine has none"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"semi-structured 2:4 kernels need compute capability 8.0 or newer; this GPU has {major}.{minor}"
    try:
        from torch.sparse import to_sparse_semi_structured  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    return None


def semi_structured_weight(weight: torch.Tensor, backend: str = "cusparselt") -> torch.Tensor:
    """``weight`` (CUDA, fp16/bf16, 2:4 sparse) as PyTorch's semi-structured tensor of ``backend``."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if backend not in SEMI_STRUCTURED_BACKENDS:
        raise ConfigError(f"unknown 2:4 backend {backend!r}; use one of {', '.join(SEMI_STRUCTURED_BACKENDS)}")
    if weight.dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError(f"semi-structured 2:4 kernels take fp16 or bf16 weights, not {weight.dtype}")
    previous = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        return to_sparse_semi_structured(weight.detach())
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = previous


def to_semi_structured(model: nn.Module, backend: str = "cusparselt") -> int:
    """Check that every decoder linear is 2:4 sparse (:func:`check_nm_pattern`: the first that is not is
    named), then give each a semi-structured weight of ``backend``, in place; return how many. The model
    must be on a CUDA GPU of compute capability >= 8.0 in fp16 or bf16."""
    device = next(model.parameters()).device
    reason = semi_structured_unavailable(device if device.type == "cuda" else None)
    if reason:
        raise ConfigError(reason)
    if device.type != "cuda":
        raise ConfigError(f"the model is on {device}; move it to the GPU first (model.to('cuda'))")
    check_nm_pattern(model, 2, 4)
    converted = 0
    for block in decoder_blocks(model):
        for linear in linear_sublayers(block).values():
            linear.weight = nn.Parameter(semi_structured_weight(linear.weight, backend), requires_grad=False)
            converted += 1
    return converted
