"""SparseGPT's OBS solver (docs/methods.md#sparsegpt)."""

from __future__ import annotations

import pytest
import torch

from dlp_lib import sparsegpt
from dlp_lib.config import ConfigError
from dlp_lib.masks import nm_mask, per_row_mask
from dlp_lib.scores import wanda_score
from dlp_lib.sparsegpt import inverse_hessian_cholesky, sparsegpt_prune
from dlp_lib.sparsegpt_c import compiled_sweep
from dlp_lib.stats import Hessian, InputNorms

ROWS, COLS, TOKENS, WINDOWS = 64, 128, 2048, 16


@pytest.fixture(scope="module")
def layer():
    """A random linear layer and correlated inputs X = Z @ A (2048 tokens in 16 windows), with both statistics."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(ROWS, COLS, generator=g)
    Z = torch.randn(TOKENS, 2 * COLS, generator=g)
    A = torch.randn(2 * COLS, COLS, generator=g) / (2 * COLS) ** 0.5  # random mixing: correlated inputs
    X = Z @ A
    norms, hessian = InputNorms(COLS), Hessian(COLS)
    windows = X.reshape(WINDOWS, TOKENS // WINDOWS, COLS)
    norms.add(windows)
    hessian.add(windows)
    return W, X, norms.mean, hessian.matrix


def _error(W, W_hat, X):
    return float(torch.linalg.matrix_norm((W - W_hat) @ X.T))


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
@pytest.mark.parametrize("blocksize", [16, 128])
def test_sparsegpt_reconstructs_better_than_wanda(layer, sparsity, blocksize):
    W, X, r, H = layer
    wanda = W.masked_fill(per_row_mask(wanda_score(W, r), sparsity), 0.0)
    pruned, loss = sparsegpt_prune(W, H, sparsity, blocksize=blocksize)
    assert (pruned == 0).float().mean() >= (wanda == 0).float().mean()  # not easier for SparseGPT
    assert _error(W, pruned, X) < _error(W, wanda, X)
    # the OBS updates help: same zeros without the updates of the kept weights is worse
    assert _error(W, pruned, X) < _error(W, W.masked_fill(pruned == 0, 0.0), X)
    assert loss > 0


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("blocksize", [16, 32, 128])
def test_unstructured_zeros_per_column_block(layer, sparsity, blocksize):
    W, _, _, H = layer
    pruned, _ = sparsegpt_prune(W, H, sparsity, blocksize=blocksize)
    assert pruned.dtype == torch.float32 and pruned.shape == W.shape
    # comparison group = rows x blocksize, pruning <= sorted[int(n*s)]: exactly int(n*s)+1 zeros without ties
    for i1 in range(0, COLS, blocksize):
        block = pruned[:, i1 : i1 + blocksize]
        assert int((block == 0).sum()) == int(block.numel() * sparsity) + 1
    assert float((pruned == 0).float().mean()) >= sparsity


def test_unstructured_last_partial_block(layer):
    W, _, _, H = layer
    W, H = W[:, :100], H[:100, :100]
    pruned, _ = sparsegpt_prune(W, H, 0.5, blocksize=32)
    for i1, width in ((0, 32), (32, 32), (64, 32), (96, 4)):
        assert int((pruned[:, i1 : i1 + width] == 0).sum()) == int(ROWS * width * 0.5) + 1


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("blocksize", [16, 128])
def test_nm_pattern_is_exact(layer, n, m, blocksize):
    W, X, r, H = layer
    pruned, _ = sparsegpt_prune(W, H, 0.0, nm=(n, m), blocksize=blocksize)
    zeros_per_group = (pruned.reshape(ROWS, COLS // m, m) == 0).sum(-1)
    assert (zeros_per_group == n).all()  # kept weights are updated, never exactly 0 on random data
    wanda = W.masked_fill(nm_mask(wanda_score(W, r), n, m), 0.0)
    assert _error(W, pruned, X) < _error(W, wanda, X)


def test_sparsity_zero_leaves_weight_unchanged(layer):
    W, _, _, H = layer
    pruned, loss = sparsegpt_prune(W, H, 0.0)
    assert torch.equal(pruned, W)
    assert loss == 0.0


def test_fp16_weight_in_fp32_out(layer):
    W, _, _, H = layer
    pruned, _ = sparsegpt_prune(W.half(), H, 0.5)
    assert pruned.dtype == torch.float32
    assert int((pruned[:, :128] == 0).sum()) == int(ROWS * 128 * 0.5) + 1


def test_dead_inputs_zero_the_weight_column(layer):
    W, X, _, _ = layer
    X = X.clone()
    X[:, [5, 77]] = 0.0
    hessian = Hessian(COLS)
    hessian.add(X.reshape(WINDOWS, -1, COLS))
    assert hessian.matrix[5, 5] == 0 and hessian.matrix[77, 77] == 0
    pruned, _ = sparsegpt_prune(W, hessian.matrix, 0.0)
    assert (pruned[:, [5, 77]] == 0).all()
    keep = [c for c in range(COLS) if c not in (5, 77)]
    assert torch.equal(pruned[:, keep], W[:, keep])  # nothing else moves at sparsity 0
    pruned, _ = sparsegpt_prune(W, hessian.matrix, 0.5)
    assert (pruned[:, [5, 77]] == 0).all()
    assert torch.isfinite(pruned).all()


def _random_spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 2 * n, generator=g, dtype=torch.float64)
    return A @ A.T / (2 * n) + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("percdamp", [0.0, 0.01, 0.1])
def test_inverse_hessian_cholesky_identity(percdamp):
    H = _random_spd(24, seed=int(percdamp * 100))
    U = inverse_hessian_cholesky(H, percdamp=percdamp)
    assert torch.equal(U, torch.triu(U))
    damped = H + percdamp * torch.diag(H).mean() * torch.eye(24, dtype=H.dtype)
    atol = 1e-7 if percdamp == 0 else 1e-12  # percdamp=0 still adds a 1e-8 relative jitter
    torch.testing.assert_close(U.T @ U, torch.linalg.inv(damped), rtol=1e-6 if percdamp == 0 else 1e-10, atol=atol)
    for i in range(24):
        expected = torch.linalg.inv(damped[i:, i:])[0, 0]
        assert float(U[i, i] ** 2) == pytest.approx(float(expected), rel=1e-6 if percdamp == 0 else 1e-10)


def test_sparsegpt_and_its_hessian_run_with_tf32_off_and_restore_the_user_setting(monkeypatch):
    """docs/methods.md#sparsegpt: the reference switches TF32 off for SparseGPT; we do it only around the
    solve and the Hessian update, so a user's TF32 choice for the forward passes survives."""
    from dlp_lib.sparsegpt import solver as module

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    seen = []
    real = module.inverse_hessian_cholesky

    def spy(H, percdamp=0.01, retries=6, overwrite=False):
        seen.append((matmul.allow_tf32, cudnn.allow_tf32))
        return real(H, percdamp, retries, overwrite)

    monkeypatch.setattr(module, "inverse_hessian_cholesky", spy)
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = True, True
        x = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
        stat = Hessian(8)
        stat.add(x)
        sparsegpt_prune(torch.randn(4, 8), stat.matrix, 0.5)
        assert seen == [(False, False)]
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        with pytest.raises(RuntimeError):  # restored even when the solve fails
            sparsegpt_prune(torch.randn(4, 8), torch.full((8, 8), float("nan")), 0.5)
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_inverse_hessian_cholesky_in_place_damping_is_bit_identical_to_adding_an_identity():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 12, generator=g)
    H = x.t() @ x
    damp = 0.01 * torch.mean(torch.diag(H))
    expected = torch.linalg.cholesky(
        torch.cholesky_inverse(torch.linalg.cholesky(H + damp * torch.eye(12))), upper=True
    )
    kept = H.clone()
    assert torch.equal(inverse_hessian_cholesky(H), expected)
    assert torch.equal(H, kept), "without overwrite the caller's H is untouched"
    assert torch.equal(inverse_hessian_cholesky(H, overwrite=True), expected)
    assert torch.equal(H.diagonal(), kept.diagonal() + damp), "overwrite damps H in place"


# ------------------------------------------------------------ the sweep without host syncs, stacked rows
def _reference_solve(weight, H, sparsity, nm=None, blocksize=128, percdamp=0.01):
    """The solver as it was before the stacked sweep (boolean indexing per column, one linear at a
    time), kept here as the reference the faster one must equal bit for bit."""
    W = weight.detach().clone().to(torch.float32)
    H = H.detach().clone().to(torch.float32)
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U = inverse_hessian_cholesky(H, percdamp, overwrite=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Q1, Err1, d1 = torch.zeros_like(W1), torch.zeros_like(W1), torch.diag(U1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None and sparsity > 0:
            score = W1**2 / d1.unsqueeze(0) ** 2
            k = min(int(score.numel() * sparsity), score.numel() - 1)
            mask1 = score <= torch.kthvalue(score.flatten(), k + 1).values
        for i in range(i2 - i1):
            w, d = W1[:, i], d1[i]
            if nm is not None and i % nm[1] == 0:
                group = W1[:, i : i + nm[1]] ** 2 / d1[i : i + nm[1]].unsqueeze(0) ** 2
                mask1.scatter_(1, i + torch.topk(group, nm[0], dim=1, largest=False).indices, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


@pytest.fixture(params=["c", "torch"])
def column_loop(request):
    """Each column loop a CPU can run in turn: "c" (its default, compiled) and "torch" (what a GPU runs
    without Triton, here on the CPU, so the GPU's arithmetic is checked too)."""
    if request.param == "c" and compiled_sweep() is None:
        pytest.skip("no C compiler: the C column loop cannot be built")
    return request.param


@pytest.mark.parametrize("sparsity, nm", [(0.5, None), (0.7, None), (0.3, None), (0.5, (2, 4)), (0.5, (4, 8))])
@pytest.mark.parametrize("blocksize", [16, 128])
def test_stacked_sweep_equals_each_linear_alone_bit_for_bit(layer, sparsity, nm, blocksize, column_loop):
    """q/k/v-like linears (64, 24 and 40 rows) sharing one Hessian, swept as one stacked matrix, give
    exactly the weights (and masks) of the reference solver run on each alone, with either column loop."""
    _, _, _, H = layer
    g = torch.Generator().manual_seed(3)
    parts = [torch.randn(rows, COLS, generator=g) for rows in (64, 24, 40)]
    stacked, _ = sparsegpt_prune(
        torch.cat(parts), H, sparsity, nm, blocksize, row_groups=[64, 24, 40], sweep=column_loop
    )
    for part, new in zip(parts, stacked.split([64, 24, 40])):
        alone, _ = sparsegpt_prune(part, H, sparsity, nm, blocksize, sweep=column_loop)
        reference = _reference_solve(part, H, sparsity, nm, blocksize)
        assert torch.equal(new, reference) and torch.equal(alone, reference)
        if nm is None:  # each linear's own threshold: its own sparsity per 128-column block
            assert int((new == 0).sum()) == int((reference == 0).sum())


def test_row_groups_must_cover_the_rows(layer):
    W, _, _, H = layer
    with pytest.raises(ValueError, match="add up to the weight's 64 rows"):
        sparsegpt_prune(W, H, 0.5, row_groups=[32, 16])


def test_column_loops_agree_on_a_wide_layer_with_dead_inputs(layer):
    """The C and PyTorch column loops on one layer wider than a block, with dead input columns and a
    per-block N:M mask chosen inside the sweep: the same weights and the same loss."""
    if compiled_sweep() is None:
        pytest.skip("no C compiler: the C column loop cannot be built")
    W, _, _, H = layer
    H = H.clone()
    H[:, 5] = 0
    H[5, :] = 0
    results = {
        loop: [sparsegpt_prune(W, H, 0.6, nm, 48, sweep=loop) for nm in (None, (2, 4))] for loop in ("c", "torch")
    }
    for (torch_w, torch_loss), (c_w, c_loss) in zip(results["torch"], results["c"]):
        assert torch.equal(torch_w, c_w) and torch_loss == c_loss
        assert bool((torch_w[:, 5] == 0).all())


@pytest.mark.parametrize("rows", [1, 31, 33, 100])
@pytest.mark.parametrize(
    "sparsity, nm, blocksize", [(0.7, None, 128), (0.35, None, 40), (0.5, (2, 4), 128), (0.5, (4, 8), 36)]
)
def test_c_sweep_equals_the_torch_loop_bit_for_bit(rows, sparsity, nm, blocksize):
    """The compiled loop against the PyTorch loop on layers whose row counts are not multiples of its
    32-row passes, with a last partial block (and a partial 4:8 group), weights with exact zeros of
    both signs, and a Hessian scaled so that products and differences round (a fused multiply-add,
    which rounds once, would change the last bits of many weights)."""
    if compiled_sweep() is None:
        pytest.skip("no C compiler: the C column loop cannot be built")
    g = torch.Generator().manual_seed(rows)
    cols = 150
    W = torch.randn(rows, cols, generator=g) * 3.1
    W[:, ::7] = 0.0
    W[::2, ::11] = -0.0
    X = torch.randn(600, cols, generator=g) @ torch.randn(cols, cols, generator=g) / cols**0.5
    H = (X.t() @ X) * 1.7
    (c_w, c_loss), (torch_w, torch_loss) = (
        sparsegpt_prune(W, H, sparsity, nm, blocksize, sweep=loop) for loop in "c torch".split()
    )
    assert torch.equal(c_w.view(torch.int32), torch_w.view(torch.int32)), "bit patterns, signed zeros included"
    assert c_loss == torch_loss


def test_without_a_c_compiler_the_torch_loop_runs_and_says_so(layer, monkeypatch, tmp_path, caplog):
    """No compiler (or one that fails): one warning, then "auto" takes the PyTorch loop with the same results,
    and an explicit "c" is refused before any work."""
    W, _, _, H = layer
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path))
    expected = _reference_solve(W, H, 0.6, None, 48)
    try:
        # missing; failing; $CC with options whose build fails
        for cc in (str(tmp_path / "no-such-cc"), "false", "cc -include no-such-header.h"):
            compiled_sweep.cache_clear()
            monkeypatch.setenv("CC", cc)
            caplog.clear()
            with caplog.at_level("WARNING", logger="dlp_lib.sparsegpt_c"):
                assert sparsegpt.sweep_backend("cpu") == "torch"
                assert torch.equal(sparsegpt_prune(W, H, 0.6, blocksize=48)[0], expected)
            assert [r.message for r in caplog.records if "PyTorch loop" in r.message], caplog.text
            with pytest.raises(ConfigError, match="the C sweep could not be built"):
                sparsegpt_prune(W, H, 0.6, blocksize=48, sweep="c")
        assert not list((tmp_path / "kernels").glob("*.so")), "a failed build leaves no library behind"
    finally:
        compiled_sweep.cache_clear()


def test_sweep_backend_chooses_each_loop_in_one_place(monkeypatch, caplog):
    """auto: C on a CPU, Triton on CUDA once its check passes (else the PyTorch loop, with a warning), the
    PyTorch loop elsewhere; an explicit loop that cannot run on the device is a ConfigError."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backend = sparsegpt.sweep_backend
    monkeypatch.setattr(sparsegpt.solver, "compiled_sweep", lambda: print)  # as if the C loop were built
    monkeypatch.setattr(sparsegpt.solver, "triton_available", lambda: True)
    checks = []
    monkeypatch.setattr(
        sparsegpt.solver, "triton_check", lambda device, nm: checks.append((device, nm))
    )  # None: passed
    assert (backend("cpu"), backend("cuda", nm=(2, 4)), backend("meta")) == ("c", "triton", "torch")
    assert checks == [("cuda", (2, 4))]
    assert [backend(device, "torch") for device in ("cpu", "cuda", "meta")] == ["torch"] * 3
    assert (backend("cpu", "c"), backend("cuda:1", "triton")) == ("c", "triton")
    for device, loop in (("cuda", "c"), ("cpu", "triton"), ("meta", "triton")):
        with pytest.raises(ConfigError, match=f"the {'C' if loop == 'c' else 'Triton'} sweep runs on"):
            backend(device, loop)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend("cpu", "triton") == "triton"  # Triton's interpreter runs the kernel on a CPU (the tests)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(sparsegpt.solver, "triton_check", lambda device, nm: "differs from the PyTorch loop")
    with caplog.at_level("WARNING", logger="dlp_lib.sparsegpt"):
        assert backend("cuda") == "torch"
    assert "the Triton sweep differs from the PyTorch loop on cuda; using the PyTorch loop" in caplog.text
    with pytest.raises(ConfigError, match="the Triton sweep differs from the PyTorch loop on cuda"):
        backend("cuda", "triton")
    monkeypatch.setattr(sparsegpt.solver, "triton_available", lambda: False)
    assert backend("cuda") == "torch"
    with pytest.raises(ConfigError, match="needs the triton package"):
        backend("cuda", "triton")
    with pytest.raises(ConfigError, match="unknown SparseGPT sweep 'plain'; use one of auto, torch, c, triton"):
        backend("cpu", "plain")


def test_an_unknown_sweep_fails_before_any_work(layer, monkeypatch):
    W, _, _, H = layer
    monkeypatch.setattr(sparsegpt.solver, "_solve", lambda *args: pytest.fail("the solver ran"))
    with pytest.raises(ConfigError, match="unknown SparseGPT sweep 'fast'"):
        sparsegpt_prune(W, H, 0.5, sweep="fast")


@pytest.mark.parametrize("variable, value, hint", [
    ("DLP_SPARSEGPT_SWEEP", "cuda-graph", "--sparsegpt_sweep auto"),
    ("DLP_SPARSEGPT_HESSIAN", "tensor-cores", "--sparsegpt_hessian half"),
])  # fmt: skip
def test_the_retired_environment_variables_are_refused_with_the_option_to_use(monkeypatch, variable, value, hint):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"{variable} is no longer read.*pass {hint}"):
        sparsegpt.check_no_legacy_environment()
    monkeypatch.delenv(variable)
    sparsegpt.check_no_legacy_environment()


# ------------------------------------------------------------ the Triton sweep, in Triton's CPU interpreter
@pytest.fixture
def triton_interpreter():
    """The Triton sweep, its kernel run by Triton's CPU interpreter (numpy, no fused multiply-add: the
    arithmetic a GPU does with ``enable_fp_fusion=False``); conftest sets ``TRITON_INTERPRET=1``."""
    pytest.importorskip("triton")
    assert sparsegpt.sweep_backend("cpu", "triton") == "triton"
    return "triton"


@pytest.mark.parametrize("sparsity, nm", [(0.7, None), (0.5, (2, 4)), (0.5, (4, 8))])
def test_triton_sweep_equals_the_reference_bit_for_bit(layer, triton_interpreter, sparsity, nm):
    """Unstructured and N:M, a last partial block (128 columns in blocks of 48, 48, 32; 36-wide blocks
    for N:M give a partial group of 4:8), and q/k/v-like row groups whose row counts are not multiples of
    the kernel's 16-row tiles."""
    W, _, _, H = layer
    blocksize = 48 if nm is None or nm[1] == 4 else 36
    new, loss = sparsegpt_prune(W[:40], H, sparsity, nm, blocksize, sweep=triton_interpreter)
    assert torch.equal(new, _reference_solve(W[:40], H, sparsity, nm, blocksize))
    assert sparsegpt_prune(W[:40], H, sparsity, nm, blocksize, sweep="torch")[1] == loss  # the errors too
    stacked, _ = sparsegpt_prune(W[:45], H, sparsity, nm, blocksize, row_groups=[20, 9, 16], sweep="triton")
    for part, rows in zip(stacked.split([20, 9, 16]), [(0, 20), (20, 29), (29, 45)]):
        assert torch.equal(part, _reference_solve(W[rows[0] : rows[1]], H, sparsity, nm, blocksize))


def test_triton_sweep_with_dead_inputs_and_a_per_block_allocation(layer, triton_interpreter):
    """A dead input column (zero in every row after pruning) and the per-block sparsities an allocation
    gives: the same weights as the reference solver."""
    W, _, _, H = layer
    H = H.clone()
    H[:, 5] = 0
    H[5, :] = 0
    for sparsity in (0.35, 0.8):
        new, _ = sparsegpt_prune(W[:24], H, sparsity, None, 64, sweep=triton_interpreter)
        assert torch.equal(new, _reference_solve(W[:24], H, sparsity, None, 64))
        assert bool((new[:, 5] == 0).all())


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_the_triton_check_passes_where_the_kernel_equals_the_torch_loop_and_catches_one_that_does_not(
    triton_interpreter, monkeypatch, nm
):
    """``triton_check`` (what "auto" runs before taking Triton on CUDA), here in the interpreter: the kernel
    as it is passes; one whose result differs in a last bit, or that fails to compile, is caught."""
    sparsegpt.triton_check.cache_clear()
    try:
        assert sparsegpt.triton_check("cpu", nm) is None
        sparsegpt.triton_check.cache_clear()
        original = sparsegpt.solver.triton_sweep

        def off_by_one_bit(W1, *args):
            W, errors = original(W1, *args)
            W.view(torch.int32)[0, -1] ^= 1
            return W, errors

        monkeypatch.setattr(sparsegpt.solver, "triton_sweep", off_by_one_bit)
        assert sparsegpt.triton_check("cpu", nm) == "differs from the PyTorch loop"
        sparsegpt.triton_check.cache_clear()
        monkeypatch.setattr(sparsegpt.solver, "triton_sweep", lambda *args: 1 / 0)
        assert sparsegpt.triton_check("cpu", nm).startswith("failed (ZeroDivisionError")
    finally:
        sparsegpt.triton_check.cache_clear()
