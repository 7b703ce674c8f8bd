"""The sequential pruning loop (docs/methods.md#the-block-by-block-pruning-pass) and the per-matrix rules it
applies (docs/methods.md#pruners), on tiny random models of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, make_tiny_model

from dlp_lib import prune as prune_module
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.pipeline import block_allocation, cached_dense_norms
from dlp_lib.prune import decoder_sparsity, dense_input_norms, prune_model


def _linears(model):
    """(block index, name, linear) for every decoder linear."""
    return [(i, name, lin) for i, b in enumerate(decoder_blocks(model)) for name, lin in linear_sublayers(b).items()]


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, snapshot):
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[key]), key


def _zero_masks(model):
    return [lin.weight == 0 for _, _, lin in _linears(model)]


# ------------------------------------------------------------------------------ Wanda
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_wanda_prunes_exactly_int_d_in_s_per_row(tiny_model, tiny_windows, sparsity):
    report = prune_model(tiny_model, PruneConfig("wanda", sparsity), tiny_windows, progress=False)
    for _, name, lin in _linears(tiny_model):
        k = int(lin.in_features * sparsity)
        zeros_per_row = (lin.weight == 0).sum(dim=1)
        assert torch.all(zeros_per_row == k), name
    assert report.block_targets == [sparsity] * 3
    expected = sum(lin.out_features * int(lin.in_features * sparsity) for _, _, lin in _linears(tiny_model))
    total = sum(lin.weight.numel() for _, _, lin in _linears(tiny_model))
    assert report.overall_achieved == pytest.approx(expected / total)


def test_wanda_prunes_the_lowest_scores_of_each_row(tiny_windows):
    """Block 0's statistics come from the unpruned model, so its masks follow from the dense norms."""
    model = make_tiny_model("llama")
    norms = dense_input_norms(model, tiny_windows, progress=False)[0]
    dense = {name: lin.weight.detach().clone() for name, lin in linear_sublayers(decoder_blocks(model)[0]).items()}
    prune_model(model, PruneConfig("wanda", 0.5), tiny_windows, progress=False)
    for name, lin in linear_sublayers(decoder_blocks(model)[0]).items():
        score = dense[name].abs() * norms[name].sqrt()
        pruned = lin.weight == 0
        for row in range(score.shape[0]):
            assert score[row][pruned[row]].max() <= score[row][~pruned[row]].min()


# ------------------------------------------------------------------------------ magnitude
def test_magnitude_uses_a_whole_matrix_threshold(tiny_model):
    dense = {(i, n): lin.weight.detach().clone() for i, n, lin in _linears(tiny_model)}
    prune_model(tiny_model, PruneConfig("magnitude", 0.6), None, progress=False)
    for i, name, lin in _linears(tiny_model):
        magnitude = dense[(i, name)].abs()
        pruned = lin.weight == 0
        assert magnitude[pruned].max() <= magnitude[~pruned].min(), name
        # the reference prunes |w| <= the value at sorted index int(numel * s): one more, plus ties
        assert int(pruned.sum()) >= int(magnitude.numel() * 0.6) + 1
        assert torch.equal(lin.weight[~pruned], dense[(i, name)][~pruned])  # kept weights unchanged
    # a per-row rule would give every row the same count; the whole-matrix rule does not
    first = next(iter(linear_sublayers(decoder_blocks(tiny_model)[0]).values()))
    assert (first.weight == 0).sum(dim=1).unique().numel() > 1


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_same_seed_gives_bit_identical_weights(tiny_windows, method):
    a = make_tiny_model("llama", seed=3)
    b = make_tiny_model("llama", seed=3)
    prune_model(a, PruneConfig(method, 0.5), tiny_windows, progress=False)
    prune_model(b, PruneConfig(method, 0.5), tiny_windows, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    other = make_tiny_model("llama", seed=4)
    prune_model(other, PruneConfig(method, 0.5), tiny_windows, progress=False)
    assert not all(torch.equal(m1, m2) for m1, m2 in zip(_zero_masks(a), _zero_masks(other)))


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_input_norms_do_not_depend_on_batch_size(arch, tiny_windows):
    model = make_tiny_model(arch)
    one = dense_input_norms(model, tiny_windows, batch_size=1, progress=False)
    eight = dense_input_norms(model, tiny_windows, batch_size=8, progress=False)
    assert len(one) == len(eight) == 3
    for block_one, block_eight in zip(one, eight):
        assert block_one.keys() == block_eight.keys()
        for name in block_one:
            torch.testing.assert_close(block_eight[name], block_one[name], rtol=1e-5, atol=0, msg=name)


def test_dense_input_norms_match_the_definition(tiny_windows):
    """r_j = (1/N) sum over windows and tokens of x_j^2, N = number of windows (docs/methods.md#wanda)."""
    model = make_tiny_model("llama")
    q_proj = decoder_blocks(model)[0].self_attn.q_proj
    seen = []
    handle = q_proj.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=tiny_windows, use_cache=False)
    finally:
        handle.remove()
    x = seen[0].double()
    expected = (x**2).sum(dim=(0, 1)) / tiny_windows.shape[0]
    norms = dense_input_norms(model, tiny_windows, batch_size=3, progress=False)
    torch.testing.assert_close(norms[0]["self_attn.q_proj"].double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_batch_size_does_not_change_wanda_masks(arch, tiny_windows):
    a = make_tiny_model(arch)
    b = make_tiny_model(arch)
    prune_model(a, PruneConfig("wanda", 0.5), tiny_windows, batch_size=1, progress=False)
    prune_model(b, PruneConfig("wanda", 0.5), tiny_windows, batch_size=8, progress=False)
    for ma, mb in zip(_zero_masks(a), _zero_masks(b)):
        assert torch.equal(ma, mb)


# ------------------------------------------------------------------------------ sequential property
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_block_statistics_see_the_already_pruned_blocks(arch, tiny_windows, monkeypatch):
    dense = dense_input_norms(make_tiny_model(arch), tiny_windows, progress=False)
    model = make_tiny_model(arch)
    names = list(linear_sublayers(decoder_blocks(model)[0]))
    recorded = []
    real = prune_module._run_with_statistics

    def spy(*args, **kwargs):
        stats, outputs = real(*args, **kwargs)
        recorded.append({name: stat.mean.clone() for name, stat in stats.items()})
        return stats, outputs

    monkeypatch.setattr(prune_module, "_run_with_statistics", spy)
    prune_model(model, PruneConfig("wanda", 0.5), tiny_windows, progress=False)
    monkeypatch.undo()
    assert len(recorded) == 3 and all(set(r) == set(names) for r in recorded)
    # block 0: nothing pruned before it, so its statistics are the dense ones
    for name in names:
        torch.testing.assert_close(recorded[0][name], dense[0][name], rtol=1e-6, atol=0)
    # block 1: its inputs come from the pruned block 0, so they differ from the dense ones ...
    for name in names:
        assert not torch.allclose(recorded[1][name], dense[1][name], rtol=1e-3, atol=0), name
    # ... and equal those of a model whose blocks 0..l-1 are pruned (the block's first sublayer, q_proj,
    # sees only the block input; later sublayers see the dense block itself, as in the reference)
    after = dense_input_norms(model, tiny_windows, progress=False)
    for block in (1, 2):
        torch.testing.assert_close(
            recorded[block]["self_attn.q_proj"], after[block]["self_attn.q_proj"], rtol=1e-5, atol=0
        )
        late = names[-1]  # down_proj / fc2: inside the (now pruned) block, so the dense block is what was seen
        assert not torch.allclose(recorded[block][late], after[block][late], rtol=1e-3, atol=0)


# ------------------------------------------------------------------------------ per-block targets
@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_block_sparsities_are_honoured(method, tiny_windows):
    model = make_tiny_model("llama")
    targets = [0.2, 0.5, 0.8]
    report = prune_model(model, PruneConfig(method, 0.5), tiny_windows, block_sparsities=targets, progress=False)
    assert report.block_targets == targets
    for block, name, lin in _linears(model):
        zeros_per_row = (lin.weight == 0).sum(dim=1)
        k = int(lin.in_features * targets[block])
        if method == "wanda":
            assert torch.all(zeros_per_row == k), (block, name)
        else:
            assert int(zeros_per_row.sum()) >= int(lin.weight.numel() * targets[block]) + 1
            assert (lin.weight == 0).float().mean() < targets[block] + 0.01
    achieved = report.block_achieved
    assert achieved[0] < achieved[1] < achieved[2]


# ------------------------------------------------------------------------------ N:M
def _zeros_per_group(weight, m):
    rows, cols = weight.shape
    return (weight == 0).reshape(rows, cols // m, m).sum(dim=-1)


@pytest.mark.parametrize("method", ["wanda", "magnitude", "sparsegpt"])
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_two_four_sparsity(method, arch, tiny_windows):
    model = make_tiny_model(arch)
    report = prune_model(model, PruneConfig(method, 0.5, sparsity_type="2:4"), tiny_windows, progress=False)
    for _, name, lin in _linears(model):
        assert torch.all(_zeros_per_group(lin.weight, 4) == 2), name
    assert report.overall_achieved == pytest.approx(0.5)
    assert report.block_targets == [0.5] * 3


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_block_nm_gives_each_block_its_own_n(method, tiny_windows):
    model = make_tiny_model("llama")
    patterns = [(0, 4), (1, 4), (3, 4)]
    report = prune_model(
        model, PruneConfig(method, 0.5, sparsity_type="2:4"), tiny_windows, block_nm=patterns, progress=False
    )
    for block, name, lin in _linears(model):
        assert torch.all(_zeros_per_group(lin.weight, 4) == patterns[block][0]), (block, name)
    assert report.block_targets == [0.0, 0.25, 0.75]
    assert report.block_achieved == pytest.approx([0.0, 0.25, 0.75])


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(block_sparsities=[0.5, 0.5]),
        dict(block_sparsities=[0.5, 0.5, 0.5, 0.5]),
        dict(block_sparsities=[0.5, 1.0, 0.5]),
        dict(block_sparsities=[0.5, 0.5, -0.1]),
        dict(block_sparsities=[0.5, float("nan"), 0.5]),
    ],
)
@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_bad_block_sparsities_raise_before_any_change(kwargs, method, tiny_windows):
    model = make_tiny_model("llama")
    before = _snapshot(model)
    with pytest.raises(ConfigError):
        prune_model(model, PruneConfig(method, 0.5), tiny_windows, progress=False, **kwargs)
    _assert_untouched(model, before)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibration_methods_need_windows(method):
    model = make_tiny_model("opt")
    before = _snapshot(model)
    with pytest.raises(ConfigError, match="calibration"):
        prune_model(model, PruneConfig(method, 0.5), None, progress=False)
    _assert_untouched(model, before)


@pytest.mark.parametrize(
    "options, error",
    [
        ({"sparsegpt_sweep": "triton"}, "the Triton sweep runs on CUDA, not cpu"),
        ({"sparsegpt_sweep": "c", "sparsegpt_hessian": "half"}, None),  # the control: it runs
    ],
)
def test_a_sparsegpt_loop_that_cannot_run_here_raises_before_any_change(monkeypatch, tiny_windows, options, error):
    """An explicit loop the device cannot run is refused before calibration starts (Triton's interpreter off:
    a CPU cannot run the kernel then)."""
    from dlp_lib import sparsegpt

    monkeypatch.setattr(sparsegpt.solver, "interpreted", lambda: False)
    model = make_tiny_model("llama")
    before = _snapshot(model)
    if error is None:
        prune_model(model, PruneConfig("sparsegpt", 0.5, **options), tiny_windows, progress=False)
        return
    monkeypatch.setattr(prune_module, "capture_block_inputs", lambda *args: pytest.fail("calibration started"))
    with pytest.raises(ConfigError, match=error):
        prune_model(model, PruneConfig("sparsegpt", 0.5, **options), tiny_windows, progress=False)
    _assert_untouched(model, before)


def test_a_retired_environment_variable_raises_before_any_change(monkeypatch, tiny_windows):
    monkeypatch.setenv("DLP_SPARSEGPT_SWEEP", "plain")
    prune_model(make_tiny_model("llama"), PruneConfig("wanda", 0.5), tiny_windows, progress=False)  # not read
    model = make_tiny_model("llama")
    before = _snapshot(model)
    monkeypatch.setattr(prune_module, "capture_block_inputs", lambda *args: pytest.fail("calibration started"))
    with pytest.raises(ConfigError, match="DLP_SPARSEGPT_SWEEP is no longer read.*--sparsegpt_sweep auto"):
        prune_model(model, PruneConfig("sparsegpt", 0.5), tiny_windows, progress=False)
    _assert_untouched(model, before)


@pytest.mark.parametrize(
    "dtype, hessian, applied",
    [
        (torch.float32, "auto", "fp32"),  # a CPU: the reference's
        (torch.float32, "half", "fp32"),  # fp32 activations keep it
        (torch.bfloat16, "auto", "fp32"),
        (torch.bfloat16, "half", "half"),
    ],
)
def test_the_report_names_the_loop_and_the_hessian_arithmetic_that_ran(tiny_windows, dtype, hessian, applied):
    from dlp_lib.sparsegpt_c import compiled_sweep

    model = make_tiny_model("llama").to(dtype)
    report = prune_model(model, PruneConfig("sparsegpt", 0.5, sparsegpt_hessian=hessian), tiny_windows, progress=False)
    loop = "c" if compiled_sweep() is not None else "torch"
    assert report.sparsegpt == {"sweep": [loop], "hessian": applied}
    assert report.to_dict()["sparsegpt"] == report.sparsegpt
    assert (
        prune_model(make_tiny_model("llama"), PruneConfig("wanda", 0.5), tiny_windows, progress=False).sparsegpt is None
    )


def test_the_half_hessian_changes_only_rounding_on_a_bf16_model(tiny_windows):
    """The same bf16 model pruned with each Hessian arithmetic: nearly the same masks (a float-level
    difference: the scale applied before or after the sums), the same sparsity."""
    masks = {}
    for hessian in ("fp32", "half"):
        model = make_tiny_model("llama").to(torch.bfloat16)
        prune_model(
            model, PruneConfig("sparsegpt", 0.5, sparsegpt_hessian=hessian), tiny_windows, batch_size=3, progress=False
        )
        masks[hessian] = torch.cat(
            [lin.weight.flatten() == 0 for b in decoder_blocks(model) for lin in linear_sublayers(b).values()]
        )
    assert float(masks["fp32"].float().mean()) == pytest.approx(float(masks["half"].float().mean()), abs=1e-3)
    assert float((masks["fp32"] != masks["half"]).float().mean()) < 0.05


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_is_refused(sparsity):
    with pytest.raises(ConfigError):
        PruneConfig("wanda", sparsity)


def test_wrong_number_of_block_nm_patterns_raises_before_any_change():
    model = make_tiny_model("llama")
    before = _snapshot(model)
    with pytest.raises(ConfigError):
        prune_model(model, PruneConfig("magnitude", 0.5, sparsity_type="2:4"), block_nm=[(2, 4)] * 2, progress=False)
    _assert_untouched(model, before)


# ------------------------------------------------------------------------------ decoder_sparsity
def test_decoder_sparsity_counts_zeros_of_block_linears_only():
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()  # excluded
        model.lm_head.weight.zero_()  # excluded
        blocks = decoder_blocks(model)
        blocks[0].self_attn.q_proj.weight[:, :8] = 0  # 8 of 32 columns
        blocks[2].mlp.down_proj.weight.zero_()
    per_block, per_linear, overall = decoder_sparsity(model)
    sizes = {name: lin.weight.numel() for name, lin in linear_sublayers(blocks[0]).items()}
    block_size = sum(sizes.values())
    assert per_linear["0.self_attn.q_proj"] == pytest.approx(0.25)
    assert per_linear["2.mlp.down_proj"] == 1.0
    assert per_linear["1.mlp.up_proj"] == 0.0
    assert len(per_linear) == 3 * 7
    assert per_block[0] == pytest.approx(sizes["self_attn.q_proj"] * 0.25 / block_size)
    assert per_block[1] == 0.0
    assert per_block[2] == pytest.approx(sizes["mlp.down_proj"] / block_size)
    zeros = sizes["self_attn.q_proj"] * 0.25 + sizes["mlp.down_proj"]
    assert overall == pytest.approx(zeros / (3 * block_size))


# ------------------------------------------------------------------------------ SparseGPT
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_sparsegpt_reaches_target_and_updates_kept_weights(arch, tiny_windows):
    model = make_tiny_model(arch)
    dense = {(i, n): lin.weight.detach().clone() for i, n, lin in _linears(model)}
    report = prune_model(model, PruneConfig("sparsegpt", 0.6), tiny_windows, progress=False)
    for i, name, lin in _linears(model):
        fraction = float((lin.weight == 0).float().mean())
        assert 0.6 <= fraction <= 0.62, (i, name, fraction)
    assert 0.6 <= report.overall_achieved <= 0.62
    assert torch.isfinite(torch.cat([lin.weight.flatten() for _, _, lin in _linears(model)])).all()
    # OBS compensation moves the kept weights (magnitude/Wanda never do)
    changed = [
        not torch.equal(lin.weight[lin.weight != 0], dense[(i, n)][lin.weight != 0]) for i, n, lin in _linears(model)
    ]
    assert all(changed)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_pruning_never_writes_into_the_loaded_weights(method, tiny_windows, tmp_path):
    """from_pretrained memory-maps a safetensors file's weights, where every written page costs a page
    fault: each pruned linear gets new memory of its own, and the loaded tensors keep the dense values."""
    from transformers import AutoModelForCausalLM

    make_tiny_model("llama").save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded = [(lin.weight.data, lin.weight.detach().clone()) for _, _, lin in _linears(model)]
    prune_model(model, PruneConfig(method, 0.5), tiny_windows, progress=False)
    pruned = [lin.weight for _, _, lin in _linears(model)]
    assert all(float((w == 0).float().mean()) >= 0.5 for w in pruned)
    assert all(torch.equal(tensor, dense) for tensor, dense in loaded)
    storages = {w.untyped_storage().data_ptr() for w in pruned}
    assert len(storages) == len(pruned), "no two linears share memory (q/k/v are solved stacked)"


# ------------------------------------------------------------------------------ dense-statistics cache
def test_cached_dense_norms_and_allocation(tiny_model, tiny_windows, tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path))
    first, _ = cached_dense_norms(tiny_model, tiny_windows, batch_size=4, progress=False)
    assert len(list((tmp_path / "dense_stats").glob("*.pt"))) == 1
    second, seconds = cached_dense_norms(tiny_model, tiny_windows, batch_size=4, progress=False)
    assert seconds == 0
    direct = dense_input_norms(tiny_model, tiny_windows, batch_size=4, progress=False)
    assert len(first) == len(second) == 3
    for a, b, c in zip(first, second, direct):
        assert a.keys() == b.keys() == c.keys()
        for name in a:
            assert torch.equal(a[name], b[name])
            assert torch.equal(a[name], c[name])
    # other windows: another cache entry
    cached_dense_norms(tiny_model, tiny_windows[:4], batch_size=4, progress=False)
    assert len(list((tmp_path / "dense_stats").glob("*.pt"))) == 2

    for config in (PruneConfig("wanda", 0.7, allocation="owl", owl_m=2.0), PruneConfig("wanda", 0.7, allocation="dlp")):
        allocation = block_allocation(tiny_model, config, second)
        densities = allocation["densities"]
        assert len(densities) == 3
        assert sum(densities) / 3 == pytest.approx(0.3, abs=1e-9)
        width = config.owl_lambda if config.allocation == "owl" else config.dlp_alpha
        assert max(densities) - min(densities) == pytest.approx(2 * width, abs=1e-9)


def test_model_fingerprint_sees_a_change_beyond_the_first_rows():
    from dlp_lib.pipeline import model_fingerprint

    model = make_tiny_model("llama")
    before = model_fingerprint(model)
    assert model_fingerprint(make_tiny_model("llama")) == before
    with torch.no_grad():
        decoder_blocks(model)[2].mlp.down_proj.weight[-1, -1] += 1e-3
    assert model_fingerprint(model) != before


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("accumulator", [prune_module.InputNorms, prune_module.Hessian])
def test_statistics_pass_stops_before_the_last_linear_with_the_same_statistics(arch, accumulator, tiny_windows):
    """Without outputs to keep, each forward stops once every linear has its input: the statistics
    equal those of the full forward bit for bit, and the block's last linear never runs."""
    from dlp_lib.layers import capture_block_inputs

    model = make_tiny_model(arch)
    block = decoder_blocks(model)[1]
    linears = linear_sublayers(block)
    inputs = capture_block_inputs(model, tiny_windows, 3)
    full, outputs = prune_module._run_with_statistics(block, inputs, linears, accumulator, keep_outputs=True)
    calls = {name: 0 for name in linears}
    for name, linear in linears.items():
        linear.register_forward_hook(lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
    early, none = prune_module._run_with_statistics(block, inputs, linears, accumulator, keep_outputs=False)
    assert len(outputs) == 3 and none == []
    assert set(early) == set(full) == set(linears)
    for name in linears:
        value = "mean" if accumulator is prune_module.InputNorms else "matrix"
        assert torch.equal(getattr(early[name], value), getattr(full[name], value)), name
        assert early[name].windows == full[name].windows == tiny_windows.shape[0]
    last = list(linears)[-1]
    assert calls[last] == 0 and all(calls[name] == 3 for name in linears if name != last), calls


def test_linears_with_the_same_input_share_one_statistic(tiny_windows, monkeypatch):
    """q/k/v (and gate/up) read the same tensor: one accumulator serves them, computed once."""
    model = make_tiny_model("llama")
    real = prune_module._run_with_statistics
    shared = []

    def spy(*args, **kwargs):
        stats, outputs = real(*args, **kwargs)
        shared.append(dict(stats))  # _prune_block clears the dict afterwards
        return stats, outputs

    monkeypatch.setattr(prune_module, "_run_with_statistics", spy)
    prune_model(model, PruneConfig("sparsegpt", 0.5), tiny_windows, batch_size=3, progress=False)
    stats = shared[0]
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"] is stats["self_attn.v_proj"]
    assert stats["mlp.gate_proj"] is stats["mlp.up_proj"]
    assert stats["self_attn.q_proj"] is not stats["mlp.gate_proj"]
    assert stats["self_attn.q_proj"].windows == tiny_windows.shape[0]  # added once per batch, not 3 times


# ------------------------------------------------------------------------ SparseGPT: stacked linears
@pytest.mark.parametrize("arch", ["llama", "opt"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(block_sparsities=[0.3, 0.6, 0.8]),
        dict(config=PruneConfig("sparsegpt", 0.5, sparsity_type="2:4")),
        dict(config=PruneConfig("sparsegpt", 0.5, sparsity_type="2:4"), block_nm=[(1, 4), (2, 4), (3, 4)]),
    ],
    ids=["uniform", "per-block", "2:4", "per-block N:M"],
)
def test_sparsegpt_stacked_linears_give_the_masks_and_weights_of_one_linear_at_a_time(
    arch, kwargs, tiny_windows, monkeypatch
):
    """prune_model sweeps linears that share a Hessian (q/k/v, gate/up) together; the result equals the
    earlier solver applied to each linear alone (test_sparsegpt._reference_solve), bit for bit."""
    from test_sparsegpt import _reference_solve

    kwargs = dict(kwargs)
    config = kwargs.pop("config", PruneConfig("sparsegpt", 0.6))
    group_sizes, real = [], prune_module._prune_sparsegpt
    monkeypatch.setattr(
        prune_module, "_prune_sparsegpt", lambda linears, *a: group_sizes.append(len(linears)) or real(linears, *a)
    )
    stacked = make_tiny_model(arch)
    prune_model(stacked, config, tiny_windows, batch_size=2, progress=False, **kwargs)
    # q/k/v share one Hessian (and gate/up in LLaMA): 4 solves per block instead of 7 (LLaMA) or 6 (OPT)
    assert group_sizes == ([3, 1, 2, 1] if arch == "llama" else [3, 1, 1, 1]) * 3

    def one_at_a_time(linears, config, sparsity, stat, nm, sweep):
        for linear in linears:
            new = _reference_solve(linear.weight, stat.matrix, sparsity, nm, config.blocksize, config.percdamp)
            linear.weight.data.copy_(new)

    monkeypatch.setattr(prune_module, "_prune_sparsegpt", one_at_a_time)
    alone = make_tiny_model(arch)
    prune_model(alone, config, tiny_windows, batch_size=2, progress=False, **kwargs)
    for (block, name, a), (_, _, b) in zip(_linears(stacked), _linears(alone)):
        assert torch.equal(a.weight, b.weight), (block, name)
