"""AlphaPruning, ATP and LSA as allocations and RIA as a pruner, wired into PruneConfig, the allocation
step and prune_model: every pruner with every new allocation, N:M included, on tiny random models.
(Each method's own arithmetic and parity: test_alpha_hill.py, test_atp.py, test_lsa.py, test_ria.py.)"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib.allocation import nm_per_block
from dlp_lib.atp import atp_densities
from dlp_lib.config import ConfigError, PruneConfig, split_method
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.lsa import lsa_block_statistic
from dlp_lib.model_allocation import block_allocation, cached_lsa_errors, dense_statistics
from dlp_lib.prune import prune_model

NEW_FIELDS = ("alpha_epsilon", "alpha_estimator", "atp_beta", "lsa_beta", "lsa_group", "lsa_fraction", "ria_a")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))


def test_old_records_keep_their_keys():
    for config in (PruneConfig("wanda", 0.7, allocation="dlp"), PruneConfig("sparsegpt", 0.5, sparsity_type="2:4")):
        d = config.to_dict()
        assert not set(NEW_FIELDS + ("ria_reallocation",)) & set(d)


def test_new_settings_are_in_the_key_when_used():
    assert {"alpha_epsilon", "alpha_estimator"} <= set(PruneConfig("wanda", 0.7, allocation="alphapruning").to_dict())
    assert PruneConfig("wanda", 0.7, allocation="atp", atp_beta=0.01).to_dict()["atp_beta"] == 0.01
    lsa = PruneConfig("wanda", 0.7, allocation="lsa").to_dict()
    assert (lsa["lsa_beta"], lsa["lsa_group"], lsa["lsa_fraction"]) == (None, 128, 0.5)
    ria = PruneConfig("ria", 0.5).to_dict()
    assert ria["ria_a"] == 0.5 and "ria_reallocation" not in ria
    assert PruneConfig("ria", 0.5, sparsity_type="2:4", ria_reallocation=True).to_dict()["ria_reallocation"]
    # a different value is a different key
    a = PruneConfig("wanda", 0.7, allocation="alphapruning").to_dict()
    b = PruneConfig("wanda", 0.7, allocation="alphapruning", alpha_epsilon=0.2).to_dict()
    assert a != b


def test_compound_names():
    assert split_method("ria_dlp") == ("ria", "dlp")
    assert split_method("wanda_alphapruning") == ("wanda", "alphapruning")
    assert split_method("sparsegpt_lsa") == ("sparsegpt", "lsa")
    assert split_method("magnitude_atp") == ("magnitude", "atp")


def test_needs_dense_statistics():
    assert PruneConfig(allocation="lsa").needs_dense_statistics
    assert not PruneConfig(allocation="alphapruning").needs_dense_statistics
    assert not PruneConfig(allocation="atp", atp_beta=0.0).needs_dense_statistics


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(allocation="atp"), "needs its slope"),
        (dict(allocation="alphapruning", alpha_epsilon=-0.1), "alpha_epsilon must be in [0, 1]"),
        (dict(allocation="lsa", lsa_group=2.5), "lsa_group must be a positive whole number"),
        (dict(method="wanda", ria_reallocation=True, sparsity_type="2:4"), "applies to RIA"),
        (dict(method="ria", ria_a=float("nan")), "ria_a must be a finite number"),
    ],
)
def test_bad_settings_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PruneConfig(**kwargs)


def _weighted_mean(values, sizes):
    return float(sum(v * s for v, s in zip(values, sizes)) / sum(sizes))


def test_alphapruning_allocation_on_a_model():
    model = make_tiny_model("llama")
    config = PruneConfig("wanda", 0.6, allocation="alphapruning", alpha_epsilon=0.2)
    result = block_allocation(model, config)
    sparsities = [1 - d for d in result["densities"]]
    assert _weighted_mean(sparsities, result["block_sizes"]) == pytest.approx(0.6, abs=1e-12)
    assert max(sparsities) / min(sparsities) == pytest.approx(1.2 / 0.8, abs=1e-9)
    assert len(result["linear_alphas"]) == 3 * 7
    order = torch.tensor(result["statistic"]).argsort()  # higher mean alpha -> sparser
    assert torch.all(torch.tensor(sparsities)[order].diff() >= 0)


def test_alphapruning_exponents_are_cached_per_weights_and_estimator(monkeypatch):
    import dlp_lib.alpha_hill as alpha_hill
    from dlp_lib.model_allocation import cached_block_alphas

    model = make_tiny_model("llama")
    first = cached_block_alphas(model, "xmin_peak")
    calls = []
    monkeypatch.setattr(alpha_hill, "block_alpha", lambda *a: calls.append(a) or (0.0, {}))
    assert cached_block_alphas(model, "xmin_peak") == first and not calls  # read back, not recomputed
    cached_block_alphas(model, "xmin_mid")
    assert len(calls) == 3  # another estimator: computed, block by block
    monkeypatch.undo()
    with torch.no_grad():
        weight = decoder_blocks(model)[0].mlp.down_proj.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) ** 3)  # heavier tail
    changed = cached_block_alphas(model, "xmin_peak")
    assert changed[1]["1.self_attn.q_proj"] == first[1]["1.self_attn.q_proj"]
    assert changed[0] != first[0]  # other weights, other spectra: not the stored scores


def test_alphapruning_clips_when_asked():
    model = make_tiny_model("llama")
    with pytest.raises(ConfigError, match="use an epsilon below"):
        block_allocation(model, PruneConfig("wanda", 0.9, allocation="alphapruning", alpha_epsilon=1.0))
    config = PruneConfig("wanda", 0.9, allocation="alphapruning", alpha_epsilon=1.0, clip_densities=True)
    result = block_allocation(model, config)
    assert min(result["densities"]) >= 0.01 - 1e-12 and max(result["densities"]) <= 1.0
    assert _weighted_mean(result["densities"], result["block_sizes"]) == pytest.approx(0.1, abs=1e-9)


def test_atp_allocation_is_the_ramp():
    model = make_tiny_model("llama")
    result = block_allocation(model, PruneConfig("wanda", 0.5, allocation="atp", atp_beta=0.1))
    assert result["densities"] == atp_densities(3, 0.5, 0.1).tolist() == pytest.approx([0.6, 0.5, 0.4])


def test_lsa_allocation_and_its_cache(tiny_windows):
    model = make_tiny_model("llama")
    config = PruneConfig("wanda", 0.5, allocation="lsa", lsa_group=16, lsa_beta=0.1)
    errors, seconds = dense_statistics(model, config, tiny_windows, batch_size=4, progress=False)
    assert seconds > 0 and [list(e) for e in errors] == [list(linear_sublayers(b)) for b in decoder_blocks(model)]
    again, seconds = cached_lsa_errors(model, tiny_windows, config, batch_size=4, progress=False)
    assert seconds == 0.0 and again == errors
    result = block_allocation(model, config, errors)
    assert result["statistic"] == pytest.approx([lsa_block_statistic(e) for e in errors])
    assert max(result["densities"]) - min(result["densities"]) == pytest.approx(0.2, abs=1e-12)
    assert sum(result["densities"]) / 3 == pytest.approx(0.5, abs=1e-12)
    assert result["width"] == 0.1
    # another group size is another statistic, not the cached one
    other = PruneConfig("wanda", 0.5, allocation="lsa", lsa_group=32, lsa_beta=0.1)
    assert dense_statistics(model, other, tiny_windows, batch_size=4, progress=False)[1] > 0


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "ria"])
@pytest.mark.parametrize("allocation", ["alphapruning", "atp", "lsa"])
def test_every_pruner_with_every_new_allocation(method, allocation, tiny_windows):
    model = make_tiny_model("llama")
    config = PruneConfig(method, 0.5, allocation=allocation, atp_beta=0.1, lsa_group=16, blocksize=16)
    dense = None
    if config.needs_dense_statistics:
        dense, _ = dense_statistics(model, config, tiny_windows, batch_size=4, progress=False)
    densities = block_allocation(model, config, dense)["densities"]
    targets = [1 - d for d in densities]
    report = prune_model(model, config, tiny_windows, block_sparsities=targets, batch_size=4, progress=False)
    for block, target in zip(decoder_blocks(model), targets):
        for linear in linear_sublayers(block).values():
            zeros = float((linear.weight == 0).float().mean())
            # per-row (Wanda, SparseGPT) or whole-matrix (magnitude; RIA's one more weight plus ties) rounding
            assert zeros == pytest.approx(target, abs=2 / linear.in_features + 1 / linear.weight.numel())
    assert report.seconds["total"] > 0


@pytest.mark.parametrize("method", ["wanda", "ria"])
def test_nm_with_a_new_allocation(method, tiny_windows):
    model = make_tiny_model("llama")
    config = PruneConfig(method, 0.5, sparsity_type="2:4", allocation="atp", atp_beta=0.25)
    densities = block_allocation(model, config)["densities"]
    patterns = [(k, 4) for k in nm_per_block(densities, 2, 4)]
    assert patterns == [(1, 4), (2, 4), (3, 4)]
    prune_model(model, config, tiny_windows, block_nm=patterns, batch_size=4, progress=False)
    for block, (n, m) in zip(decoder_blocks(model), patterns):
        for linear in linear_sublayers(block).values():
            groups = (linear.weight == 0).reshape(linear.out_features, -1, m).sum(dim=2)
            assert torch.all(groups == n)


def test_ria_reallocation_keeps_n_per_group_after_permuting(tiny_windows):
    model = make_tiny_model("llama")
    config = PruneConfig("ria", 0.5, sparsity_type="2:4", ria_reallocation=True)
    prune_model(model, config, tiny_windows, batch_size=4, progress=False)
    for block in decoder_blocks(model):
        for linear in linear_sublayers(block).values():
            zeros = linear.weight == 0
            assert int(zeros.sum()) == linear.weight.numel() // 2  # n of every m, in the permuted order


# ------------------------------------------------------------------------- ATP's beta, chosen on held-out text
@pytest.fixture
def atp_run(tiny_model_dir, text_file):
    from dlp_lib.pipeline import RunConfig

    return RunConfig(
        model=str(tiny_model_dir),
        prune=PruneConfig("wanda", 0.5),
        calibration=str(text_file),
        eval=str(text_file),
        nsamples=4,
        seqlen=32,
        eval_windows=4,
        batch_size=2,
    )


def test_atp_beta_chosen_on_heldout_windows(atp_run, monkeypatch):
    from dlp_lib import atp_beta

    scored = []
    real = atp_beta.perplexity
    monkeypatch.setattr(atp_beta, "perplexity", lambda m, w, *a, **k: scored.append(w) or real(m, w, *a, **k))
    result = atp_beta.choose_atp_beta(atp_run, betas=[0.0, 0.1, 0.2], heldout=3, progress=False)
    assert result["betas"] == [0.0, 0.1, 0.2] and len(result["perplexity"]) == 3
    assert result["best"] == result["betas"][min(range(3), key=result["perplexity"].__getitem__)]
    assert result["on"] == "heldout" and result["windows"] == 3
    # every beta scored on the same held-out windows: calibration text, neither the calibration windows
    # nor the evaluation windows
    from dlp_lib.data import calibration_windows, evaluation_windows
    from dlp_lib.models import load_model

    tokenizer = load_model(atp_run.model)[1]
    calibration = calibration_windows(atp_run.calibration, tokenizer, 4, 32, 0)
    evaluation = evaluation_windows(atp_run.eval, tokenizer, 32, 4)
    assert all(torch.equal(w, scored[0]) for w in scored)
    for window in scored[0]:
        assert not any(torch.equal(window, c) for c in calibration)
        assert not any(torch.equal(window, e) for e in evaluation)
    # beta 0 is the uniform allocation: the same perplexity as a uniform Wanda run on those windows
    model = load_model(atp_run.model)[0]
    prune_model(model, PruneConfig("wanda", 0.5), calibration, batch_size=2, progress=False)
    assert result["perplexity"][0] == pytest.approx(real(model, scored[0], 4, progress=False)["perplexity"], rel=1e-6)


def test_atp_beta_on_the_evaluation_windows_is_labelled(atp_run):
    from dlp_lib.atp_beta import choose_atp_beta

    result = choose_atp_beta(atp_run, betas=[0.0, 0.1], on="eval", progress=False)
    assert result["on"] == "eval" and "authors' way" in result["selection"] and result["windows"] == 4


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(prune=None), "needs a pruning configuration"),
        (dict(eval=None), "has no --eval source"),
        (dict(prune=PruneConfig("wanda", 0.5, sparsity_type="2:4")), "searches unstructured"),
    ],
)
def test_atp_beta_bad_requests(atp_run, change, message):
    import dataclasses

    from dlp_lib.atp_beta import choose_atp_beta

    with pytest.raises(ConfigError, match=message):
        choose_atp_beta(dataclasses.replace(atp_run, **change), on="eval", progress=False)
    with pytest.raises(ConfigError, match="unknown beta selection"):
        choose_atp_beta(atp_run, on="test", progress=False)


# ------------------------------------------------------------------------- notebook 12's helpers
def _record(method, allocation, seed, densities=None, sparsity=0.7):
    prune = {"method": method, "allocation": allocation, "sparsity": sparsity, "sparsity_type": "unstructured"}
    record = {"config": {"prune": prune, "seed": seed}, "pruning": {"block_achieved": [sparsity] * 3}}
    if densities is not None:
        record["allocation"] = {"densities": densities}
    return record


def test_allocation_profiles_and_their_rank_correlations():
    from dlp_lib.experiments import allocation_profiles, profile_correlations

    records = [
        _record("wanda", "uniform", 0),
        _record("wanda", "dlp", 0, [0.4, 0.3, 0.2]),
        _record("wanda", "atp", 0, [0.35, 0.3, 0.25]),
        _record("wanda", "owl", 0, [0.2, 0.3, 0.4]),
        _record("wanda", "dlp", 1, [0.1, 0.3, 0.5]),  # another seed
        _record("sparsegpt", "dlp", 0, [0.1, 0.3, 0.5]),  # another pruner
        {"config": {"prune": None, "seed": 0}},  # dense
    ]
    profiles = allocation_profiles(records, "wanda", 0)
    assert list(profiles.columns) == ["uniform", "dlp", "atp", "owl"]
    assert profiles["dlp"].round(12).tolist() == [0.6, 0.7, 0.8] and profiles["uniform"].tolist() == [0.7] * 3
    correlations = profile_correlations(profiles)
    assert list(correlations.columns) == ["dlp", "atp", "owl"]  # uniform ranks nothing
    assert correlations.loc["dlp", "atp"] == pytest.approx(1.0) and correlations.loc["dlp", "owl"] == pytest.approx(
        -1.0
    )


def test_atp_choice_is_made_once_and_kept(tmp_path, monkeypatch):
    from dlp_lib import experiments as ex
    from dlp_lib.experiments import atp as atp_experiments

    prof = ex.profile("smoke")
    calls = []

    def fake_choose(config, on, heldout, step, progress):
        calls.append((config.prune.method, on, heldout, step))
        return {"best": 0.01, "betas": [0.01, 0.02], "perplexity": [5.0, 6.0], "on": on, "windows": heldout}

    monkeypatch.setattr(atp_experiments, "choose_atp_beta", fake_choose)
    assert ex.atp_choices(prof, tmp_path) == {"wanda": 0.01}
    assert ex.atp_choices(prof, tmp_path) == {"wanda": 0.01}  # read back, not chosen again
    assert calls == [("wanda", "heldout", 2, 0.01)]
    frame = ex.atp_choice_frame(prof, tmp_path)
    assert frame["chosen"].tolist() == [True, False] and frame["perplexity"].tolist() == [5.0, 6.0]
    # other settings are another choice
    other = {**prof, "atp_search": {**prof["atp_search"], "heldout": 3}}
    assert ex.stored_atp_choice(other, "wanda", tmp_path) is None
