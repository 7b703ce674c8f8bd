"""Run configuration: every refusal is a ConfigError that names the problem."""

from __future__ import annotations

import pytest

from dlp_lib.config import ConfigError, PruneConfig, parse_sparsity_type, split_method


def test_defaults_are_valid_and_match_the_spec():
    config = PruneConfig()
    assert config.nm is None
    assert (config.owl_lambda, config.owl_m, config.dlp_alpha, config.dsa_lambda) == (0.08, 5.0, 0.15, 0.08)
    assert config.dsa_graph == "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"
    assert (config.percdamp, config.blocksize) == (0.01, 128)
    assert not config.needs_dense_statistics
    assert PruneConfig(allocation="dlp").needs_dense_statistics
    assert config.to_dict()["sparsity"] == 0.5


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "text,expected",
    [("unstructured", None), ("2:4", (2, 4)), ("4:8", (4, 8)), ("5:8", (5, 8)), (" 1 : 4 ", (1, 4))],
)
def test_parse_sparsity_type(text, expected):
    assert parse_sparsity_type(text) == expected


@pytest.mark.parametrize("text", ["2-4", "2/4", "dense", "2:4:8", "a:b", ""])
def test_parse_sparsity_type_refuses_unknown_forms(text):
    with pytest.raises(ConfigError, match="unknown sparsity type"):
        parse_sparsity_type(text)


@pytest.mark.parametrize("text", ["4:4", "5:4", "0:4", "8:2"])
def test_parse_sparsity_type_refuses_n_not_below_m(text):
    with pytest.raises(ConfigError, match=r"0 < N < M.*" + text):
        parse_sparsity_type(text)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"sparsity": -0.1}, "sparsity must be in [0, 1)"),
        ({"sparsity": 1.0}, "sparsity must be in [0, 1)"),
        ({"sparsity": 1.5}, "sparsity must be in [0, 1)"),
        ({"sparsity": "x"}, "sparsity must be a finite number"),
        ({"sparsity": None}, "sparsity must be a finite number"),
        ({"sparsity_type": "4:4"}, "0 < N < M"),
        ({"sparsity_type": "5:4"}, "0 < N < M"),
        ({"sparsity_type": "2-4"}, "unknown sparsity type '2-4'"),
        ({"method": "wanda_owl"}, "unknown prune method 'wanda_owl'"),
        ({"method": "obs"}, "unknown prune method 'obs'"),
        ({"allocation": "owl2"}, "unknown allocation 'owl2'"),
        ({"allocation": "none"}, "unknown allocation 'none'"),
        ({"dlp_alpha": -0.01}, "dlp_alpha must be >= 0"),
        ({"owl_lambda": -1.0}, "owl_lambda must be >= 0"),
        ({"dsa_lambda": -0.5}, "dsa_lambda must be >= 0"),
        ({"owl_m": 0.0}, "owl_m"),
        ({"owl_m": -3.0}, "owl_m"),
        ({"dlp_statistic": "mode"}, "dlp_statistic"),
        ({"percdamp": -0.01}, "percdamp"),
        ({"percdamp": 1.0}, "percdamp"),
        ({"blocksize": 0}, "blocksize"),
        (
            {"blocksize": 130, "sparsity_type": "4:8", "method": "sparsegpt"},
            "multiple of M=8; got 130: pass --blocksize 128",
        ),
        ({"sparsity_type": "2:5", "method": "sparsegpt"}, "pass --blocksize 125"),
        ({"use_variant": True, "method": "sparsegpt"}, "use_variant"),
        ({"use_variant": True, "sparsity_type": "2:4"}, "use_variant"),
        ({"sparsegpt_sweep": "plain"}, "unknown sparsegpt_sweep 'plain'; use one of auto, torch, c, triton"),
        (
            {"sparsegpt_hessian": "tensor-cores"},
            "unknown sparsegpt_hessian 'tensor-cores'; use one of auto, fp32, half",
        ),
    ],
)
def test_prune_config_refusals(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        PruneConfig(**kwargs)
    assert needle in str(info.value)
    if "sparsity" in kwargs and isinstance(kwargs["sparsity"], float):
        assert repr(kwargs["sparsity"]) in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sparsity": 0.0},
        {"sparsity": 0.99},
        {"sparsity_type": "2:4", "blocksize": 16},
        {"sparsity_type": "4:8", "blocksize": 128},
        {"dlp_alpha": 0.0, "owl_lambda": 0.0, "dsa_lambda": 0.0},
        {"use_variant": True},
        {"method": "sparsegpt", "allocation": "dsa", "percdamp": 0.0},
        {"dlp_statistic": "median", "allocation": "dlp"},
    ],
)
def test_prune_config_accepts_valid_settings(kwargs):
    config = PruneConfig(**kwargs)
    for key, value in kwargs.items():
        assert getattr(config, key) == value


def test_prune_config_is_frozen():
    config = PruneConfig()
    with pytest.raises(AttributeError):
        config.sparsity = 0.7


@pytest.mark.parametrize(
    "name,expected",
    [
        ("wanda", ("wanda", None)),
        ("magnitude", ("magnitude", None)),
        ("sparsegpt", ("sparsegpt", None)),
        ("wanda_owl", ("wanda", "owl")),
        ("sparsegpt_dlp", ("sparsegpt", "dlp")),
        ("magnitude_dsa", ("magnitude", "dsa")),
        ("wanda_uniform", ("wanda", "uniform")),
        ("wanda_owl_search", ("wanda", "dsa")),
        ("Wanda_DLP", ("wanda", "dlp")),
    ],
)
def test_split_method(name, expected):
    assert split_method(name) == expected


@pytest.mark.parametrize("name", ["wanda_foo", "foo", "owl", "wanda_owl_structure", "sparsegpt_", "", "wandaowl"])
def test_split_method_refuses_unknown_compounds(name):
    with pytest.raises(ConfigError, match="unknown prune method"):
        split_method(name)


def test_blocksize_concerns_sparsegpt_only():
    """Wanda and magnitude have no column blocks: an N:M pattern whose M does not divide the default
    blocksize is theirs to use (the old check blamed a SparseGPT setting the user never gave)."""
    for method in ("wanda", "magnitude"):
        assert PruneConfig(method=method, sparsity_type="2:5").nm == (2, 5)


# ---------------------------------------------------------------- SparseGPT's arithmetic, in the record's key
def test_the_hessian_arithmetic_of_auto_depends_on_the_device_only():
    from dlp_lib.config import hessian_for_device

    assert [hessian_for_device("auto", d) for d in ("cpu", "cuda", "cuda:1", "mps", "meta")] == [
        "fp32", "half", "half", "fp32", "fp32",
    ]  # fmt: skip
    assert hessian_for_device("fp32", "cuda") == "fp32" and hessian_for_device("half", "cpu") == "half"
    config = PruneConfig("sparsegpt")
    assert (config.on_device("cuda:0").sparsegpt_hessian, config.on_device("cpu").sparsegpt_hessian) == ("half", "fp32")


def test_only_a_sparsegpt_run_off_the_reference_hessian_names_its_arithmetic():
    """The sweep never enters the dict (every loop gives the same weights); the Hessian arithmetic only for
    SparseGPT off the reference's fp32, so every record made before these fields keeps its key."""
    fields = {"sparsegpt_sweep", "sparsegpt_hessian"}
    for config in (
        PruneConfig("sparsegpt", sparsegpt_hessian="fp32", sparsegpt_sweep="torch"),
        PruneConfig("wanda", sparsegpt_hessian="half"),
        PruneConfig("magnitude", sparsegpt_sweep="triton"),
    ):
        assert not fields & set(config.to_dict()), config
    assert PruneConfig("sparsegpt", sparsegpt_hessian="half").to_dict()["sparsegpt_hessian"] == "half"
    assert "sparsegpt_sweep" not in PruneConfig("sparsegpt", sparsegpt_hessian="half").to_dict()


def test_a_record_of_one_hessian_arithmetic_is_never_the_key_of_another():
    """Two runs that differ only in SparseGPT's Hessian arithmetic have different record keys, so a cached
    record is never served for the other arithmetic (with the environment variable of before, both had one
    key); a CPU's "auto" is the reference's and keeps the key of a run that predates the option."""
    from dlp_lib.pipeline import RunConfig
    from dlp_lib.results import config_key

    def key(device="cpu", **options):
        return config_key(RunConfig(prune=PruneConfig("sparsegpt", 0.7, **options), device=device).to_dict())

    assert key(sparsegpt_hessian="fp32") != key(sparsegpt_hessian="half")
    assert key() == key(sparsegpt_hessian="fp32") == key(sparsegpt_sweep="torch")
    assert key("cuda") == key("cuda", sparsegpt_hessian="half") != key("cuda", sparsegpt_hessian="fp32")
    # the key of the same run before the fields existed: the dict without them
    before = RunConfig(prune=PruneConfig("sparsegpt", 0.7)).to_dict()
    assert key() == config_key(before) and "sparsegpt_hessian" not in before["prune"]
