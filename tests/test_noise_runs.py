"""The run side of the noise work: the float-sensitivity perturbation (PruneConfig.perturb), calibration
seeds in the experiment specs, and the hardware a record names."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from dlp_lib import experiments as ex
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.prune import perturb_statistics, prune_model
from dlp_lib.results import hardware, machine_label, math_libraries, record_path
from dlp_lib.stats import Hessian, InputNorms


# ------------------------------------------------------------------------------------ perturbation
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="wanda", perturb=-1e-6), "perturb is a relative float-level noise"),
        (dict(method="wanda", perturb=0.5), "perturb is a relative float-level noise"),
        (dict(method="magnitude", perturb=1e-6), "nothing to perturb"),
    ],
)
def test_bad_perturbations_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PruneConfig(**kwargs)


def test_perturbation_fields_appear_in_records_only_when_on():
    assert "perturb" not in PruneConfig("wanda", 0.7).to_dict()
    assert PruneConfig("wanda", 0.7, perturb=1e-6, perturb_seed=2).to_dict()["perturb_seed"] == 2
    # so the record of a normal run keeps the key it had before these fields existed
    plain = ex.run_config(ex.profile("smoke"), "wanda", 0.7, "dlp")
    assert "perturb" not in plain.to_dict()["prune"]


def test_input_norms_perturbation_is_relative_and_reproducible():
    stat = InputNorms(6)
    stat.add(torch.arange(12.0).reshape(1, 2, 6) + 1)
    before = stat.mean.clone()
    stat.perturb(1e-3, torch.Generator().manual_seed(0))
    ratio = stat.mean / before - 1
    assert 0 < ratio.abs().max() < 5e-3 and not torch.equal(stat.mean, before)
    again = InputNorms(6)
    again.add(torch.arange(12.0).reshape(1, 2, 6) + 1)
    again.perturb(1e-3, torch.Generator().manual_seed(0))
    assert torch.equal(again.mean, stat.mean)


def test_hessian_perturbation_keeps_it_symmetric():
    stat = Hessian(5)
    stat.add(torch.randn(2, 7, 5, generator=torch.Generator().manual_seed(1)))
    before = stat.matrix.clone()
    stat.perturb(1e-4, torch.Generator().manual_seed(0))
    assert torch.equal(stat.matrix, stat.matrix.t()) and not torch.equal(stat.matrix, before)
    assert ((stat.matrix - before).abs() <= 1e-3 * before.abs() + 1e-12).all()


def test_shared_statistics_are_perturbed_once():
    shared, alone = InputNorms(4), InputNorms(4)
    for stat in (shared, alone):
        stat.add(torch.ones(1, 3, 4))
    perturb_statistics({"q": shared, "k": shared, "v": shared, "o": alone}, 1e-3, seed=0, block_index=0)
    reference = InputNorms(4)
    reference.add(torch.ones(1, 3, 4))
    perturb_statistics({"q": reference}, 1e-3, seed=0, block_index=0)
    assert torch.equal(shared.mean, reference.mean)  # one draw for q/k/v, not three


def _pruned_weights(config, windows):
    model = make_tiny_model("llama")
    prune_model(model, config, windows, batch_size=2, progress=False)
    return [lin.weight.clone() for b in decoder_blocks(model) for lin in linear_sublayers(b).values()]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_perturbed_pruning_is_reproducible_and_zero_perturbation_is_the_normal_run(method, tiny_windows):
    normal = _pruned_weights(PruneConfig(method, 0.5), tiny_windows)
    draw = _pruned_weights(PruneConfig(method, 0.5, perturb=1e-2, perturb_seed=1), tiny_windows)
    same_draw = _pruned_weights(PruneConfig(method, 0.5, perturb=1e-2, perturb_seed=1), tiny_windows)
    assert all(torch.equal(a, b) for a, b in zip(draw, same_draw))
    # the sparsity is kept exactly; a perturbation of 1% moves some weights on a tiny random model
    assert [int((w == 0).sum()) for w in draw] == [int((w == 0).sum()) for w in normal]
    assert not all(torch.equal(a, b) for a, b in zip(draw, normal))


# ----------------------------------------------------------------------------------------- seeds
def test_seeded_specs_run_calibration_free_cells_once():
    prof = ex.profile("quick")
    specs = ex.seeded(prof, ex.main_specs(prof))
    count = lambda m, a: sum(s.get("method") == m and s.get("allocation") == a for s in specs)  # noqa: E731
    assert count(None, None) == 1 and count("magnitude", "uniform") == 1
    assert count("magnitude", "dlp") == count("wanda", "uniform") == count("sparsegpt", "owl") == len(prof["seeds"])
    # seed 0 is the very run (and record) of the unseeded spec
    a = ex.run_config(prof, "wanda", 0.7, "dlp")
    b = ex.run_config(prof, "wanda", 0.7, "dlp", seed=0)
    c = ex.run_config(prof, "wanda", 0.7, "dlp", seed=1)
    assert record_path("r", a.to_dict()) == record_path("r", b.to_dict()) != record_path("r", c.to_dict())
    assert c.seed == 1 and "seed 1" in ex.run_label(c) and "seed" not in ex.run_label(ex.run_config(prof, "magnitude"))


def test_float_sensitivity_specs_share_the_normal_run():
    prof = ex.profile("smoke")
    specs = ex.float_sensitivity_specs(prof)
    assert specs[0] == {"method": "wanda", "allocation": "uniform", "sparsity": 0.7}
    assert [s.get("perturb_seed") for s in specs] == [None, 1, 2]
    config = ex.run_config(prof, **specs[1])
    assert config.prune.perturb == 1e-6 and "statistics × (1 + 1e-06·noise #1)" in ex.run_label(config)
    normal = ex.run_config(prof, **specs[0])
    assert normal == ex.run_config(prof, **ex.main_specs(prof)[1])  # the main table's seed-0 run


# -------------------------------------------------------------------------------------- hardware
def test_records_name_the_hardware():
    info = hardware()
    assert {"cpu_model", "cpu_capability", "cpu_threads", "torch"} <= set(info)
    assert info["torch"] == torch.__version__
    label = machine_label(info)
    assert f"{info['cpu_threads']} threads" in label and torch.__version__ in label
    assert machine_label(None).startswith("unknown machine")


def test_math_libraries_are_read_from_the_torch_build():
    config = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture applications
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl, TORCH_VERSION=2.13.0,
"""
    assert math_libraries(config) == {
        "libraries": [
            "Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605",
            "Intel(R) MKL-DNN v3.12.0",
        ],
        "blas_info": "mkl",
        "lapack_info": "mkl",
    }
    assert math_libraries("  - Build settings: BLAS_INFO=open, LAPACK_INFO=open,") == {
        "blas_info": "open",
        "lapack_info": "open",
    }
