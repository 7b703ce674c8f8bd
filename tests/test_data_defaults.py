"""Which data a run reads when none is given: the embedded extracts for the embedded model, the papers' C4
calibration and WikiText-2 test perplexity for any other (docs/methods.md, "Calibration and evaluation data";
docs/usage.md, *Data*); offline, such a run is refused in one line before the model loads. The embedded
model's runs keep their configuration and record keys exactly."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import make_tiny_model

from dlp_lib import hub, pipeline
from dlp_lib.cli import evopress as evopress_cli, main, search as search_cli
from dlp_lib.cli.prune import build_parser, build_run_config
from dlp_lib.config import ConfigError, PruneConfig, default_sources
from dlp_lib.pipeline import RunConfig
from dlp_lib.results import config_key

NO_NETWORK = "no network (test)"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture(autouse=True)
def online(tmp_path, monkeypatch):
    """No offline variable set and the hub answering, whatever this machine's network and settings (a test
    that needs otherwise sets it); nothing asks the real hub."""
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "unreachable", lambda timeout=hub.TIMEOUT_SECONDS: None)


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.setattr(hub, "unreachable", lambda timeout=hub.TIMEOUT_SECONDS: NO_NETWORK)


@pytest.fixture
def hub_never_asked(monkeypatch):
    def refuse(timeout=hub.TIMEOUT_SECONDS):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(hub, "unreachable", refuse)


@pytest.fixture
def llama_dir(tmp_path):
    """A local Hugging Face folder: a tiny random LLaMA built from a config (no tokenizer: nothing here
    gets as far as reading text)."""
    path = tmp_path / "tiny-llama"
    make_tiny_model("llama").save_pretrained(path)
    return path


def run_config(argv):
    return build_run_config(build_parser().parse_args([*argv, "--device", "cpu"]))[0]


def refusal(command, argv, capsys, prog="dlp-prune") -> str:
    """Run ``command``; assert exit 2 with one ``prog: error:`` line, no traceback, nothing on stdout;
    return the message after the prefix."""
    status = command(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0][len(f"{prog}: error: ") :]


# ------------------------------------------------------------------------ the embedded model: unchanged
# RunConfig().to_dict() and the record keys as they were before the defaults depended on the model
# (computed on the code before the change): the committed records are keyed by them
DEFAULT_RUN = {
    "batch_size": 8,
    "calibration": "wiki-extracts",
    "device": "cpu",
    "dtype": "auto",
    "eval": "wiki-extracts",
    "eval_batch_size": 4,
    "eval_windows": None,
    "model": "smollm2-135m",
    "nsamples": 128,
    "prune": {
        "allocation": "uniform",
        "blocksize": 128,
        "clip_densities": False,
        "dlp_alpha": 0.15,
        "dlp_statistic": "mean",
        "dsa_graph": "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)",
        "dsa_lambda": 0.08,
        "extra": {},
        "method": "wanda",
        "owl_lambda": 0.08,
        "owl_m": 5.0,
        "percdamp": 0.01,
        "sparsity": 0.5,
        "sparsity_type": "unstructured",
        "use_variant": False,
    },
    "seed": 0,
    "seqlen": 2048,
    "trust_remote_code": False,
}
API_KEYS = {
    "default": (lambda: RunConfig(), "ad51cb8844103c33"),
    "dense": (lambda: RunConfig(prune=None), "ad004d8ffdadfebf"),
    "no perplexity": (lambda: RunConfig(eval=None), "35ad61e1b8e59e11"),
    "sparsegpt dlp, quick sizes": (
        lambda: RunConfig(
            prune=PruneConfig("sparsegpt", 0.7, allocation="dlp"), nsamples=8, seqlen=256, eval_windows=16
        ),
        "44da05ec1dafff2c",
    ),
    "embedded on the papers' data": (lambda: RunConfig(calibration="c4", eval="wikitext2"), "7d2f2b795c685a0b"),
    "hub model, sources given": (
        lambda: RunConfig(model="meta-llama/Llama-2-7b-hf", calibration="c4", eval="wikitext2", device="cuda"),
        "6f0d85aacac1e3cb",
    ),
}
CLI_KEYS = {
    "no flags": ([], "ad51cb8844103c33"),
    "dense": (["--prune_method", "dense"], "ad004d8ffdadfebf"),
    "magnitude, no perplexity": (["--prune_method", "magnitude", "--eval", "none"], "09522d88a2b234bf"),
    "sparsegpt dlp, quick sizes": (
        ["--prune_method", "sparsegpt_dlp", "--sparsity_ratio", "0.7", "--nsamples", "8", "--seqlen", "256"]
        + ["--eval_windows", "16"],
        "44da05ec1dafff2c",
    ),
    "embedded on the papers' data": (["--calibration", "c4", "--eval", "wikitext2"], "7d2f2b795c685a0b"),
}


def test_the_default_run_keeps_its_configuration():
    assert RunConfig().to_dict() == DEFAULT_RUN


@pytest.mark.parametrize("make, key", API_KEYS.values(), ids=API_KEYS.keys())
def test_runs_of_the_embedded_model_or_with_sources_given_keep_their_record_keys(make, key):
    assert config_key(make().to_dict()) == key


@pytest.mark.parametrize("argv, key", CLI_KEYS.values(), ids=CLI_KEYS.keys())
def test_the_commands_make_the_same_keys_for_the_embedded_model(argv, key, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # c4 / wikitext2 named: left to the data sets cache, as before
    assert config_key(run_config(argv).to_dict()) == key


def test_the_profiles_keep_their_record_keys():
    from dlp_lib import experiments

    assert config_key(experiments.run_config(experiments.profile("quick"), "wanda", allocation="dlp").to_dict()) == (
        "96c4ef534e1262e3"
    )
    assert config_key(experiments.run_config(experiments.profile("paper"), "wanda", allocation="dlp").to_dict()) == (
        "6b44de75531c6876"
    )


def test_the_embedded_model_reads_the_embedded_extracts_offline(monkeypatch, hub_never_asked, no_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_sources("smollm2-135m") == ("wiki-extracts", "wiki-extracts")
    for config in (RunConfig(), run_config([]), run_config(["--model", "smollm2-135m"])):
        assert (config.calibration, config.eval) == ("wiki-extracts", "wiki-extracts")
        pipeline.validate(config)  # nothing from the hub: no refusal, no question to it
    fitness = search_cli.build_settings(search_cli.build_parser().parse_args(["--device", "cpu"]))[0]
    settings = evopress_cli.build_settings(evopress_cli.build_parser().parse_args(["--device", "cpu"]))[0]
    assert fitness.calibration == settings.calibration == "wiki-extracts"


# ------------------------------------------------------------------------------ any other model: the papers'
def test_another_model_defaults_to_c4_and_wikitext2(llama_dir, no_loading):
    assert default_sources(str(llama_dir)) == default_sources("meta-llama/Llama-2-7b-hf") == ("c4", "wikitext2")
    config = run_config(["--model", str(llama_dir)])  # validated: the hub answers (the fixture)
    assert (config.calibration, config.eval) == ("c4", "wikitext2")
    assert config.defaulted_sources == {"--calibration": "c4", "--eval": "wikitext2"}
    assert (config.nsamples, config.seqlen) == (128, 2048)  # the counts stay everyone's (the papers')
    given = run_config(["--model", str(llama_dir), "--calibration", "c4", "--eval", "wikitext2"])
    assert given.to_dict() == config.to_dict() and given.defaulted_sources == {}  # one record either way
    api = RunConfig(model=str(llama_dir))
    assert (api.calibration, api.eval) == ("c4", "wikitext2") and api.to_dict() == config.to_dict()
    assert RunConfig(model=str(llama_dir), eval=None).eval is None  # None is still "no perplexity"
    assert RunConfig(model=str(llama_dir), calibration="wiki-extracts").calibration == "wiki-extracts"


def test_the_searches_default_to_c4_for_another_model(llama_dir):
    argv = ["--model", str(llama_dir), "--device", "cpu"]
    fitness = search_cli.build_settings(search_cli.build_parser().parse_args(argv))[0]
    settings = evopress_cli.build_settings(evopress_cli.build_parser().parse_args(argv))[0]
    assert fitness.calibration == settings.calibration == "c4"


def test_the_search_settings_in_python_default_by_model_too(llama_dir):
    from dlp_lib.search.evopress import EvoPressSettings
    from dlp_lib.search.fitness import FitnessSettings

    assert FitnessSettings(model=str(llama_dir)).calibration == EvoPressSettings(model=str(llama_dir)).calibration
    assert FitnessSettings(model=str(llama_dir)).calibration == "c4"
    assert FitnessSettings().calibration == EvoPressSettings().calibration == "wiki-extracts"
    # the embedded model's searches keep their keys: defaulted and named give the same settings
    assert FitnessSettings() == FitnessSettings(calibration="wiki-extracts")
    assert EvoPressSettings().to_dict() == EvoPressSettings(calibration="wiki-extracts").to_dict()


def test_help_gives_the_defaults_by_model():
    options = {opt: a for a in build_parser()._actions for opt in a.option_strings}
    for flag, paper in (("--calibration", "c4 for any other model"), ("--eval", "wikitext2 (WikiText-2 test)")):
        assert options[flag].default is None
        assert "wiki-extracts for the embedded smollm2-135m" in options[flag].help and paper in options[flag].help


# ----------------------------------------------------------------------------- offline: one line, no model
def test_offline_a_run_given_no_data_is_refused_before_loading(llama_dir, monkeypatch, capsys, no_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = refusal(main, ["--model", str(llama_dir), "--device", "cpu"], capsys)
    assert "with no --calibration / --eval given" in line and "offline mode (HF_HUB_OFFLINE)" in line
    for local in ("--calibration c4:<path to a C4 json.gz shard>", "--eval wikitext2:<path to the WikiText-2 test"):
        assert local in line
    assert "a local .txt/.jsonl file" in line and "wiki-extracts" in line
    # the Python API: the same message, as a ConfigError, before the model loads
    with pytest.raises(ConfigError) as info:
        pipeline.run(RunConfig(model=str(llama_dir), nsamples=2, seqlen=32))
    assert str(info.value) == line


def test_with_the_hub_out_of_reach_too(llama_dir, capsys, no_loading, no_hub):
    line = refusal(main, ["--model", str(llama_dir), "--device", "cpu"], capsys)
    assert "the hub cannot be reached" in line and NO_NETWORK in line
    assert "--calibration c4:<path" in line and "--eval wikitext2:<path" in line


@pytest.mark.parametrize(
    "flags, named, not_named",
    [
        (["--prune_method", "dense"], "--eval", "--calibration"),  # a dense run reads no calibration
        (["--eval", "none"], "--calibration", "--eval"),
        (["--eval", "none", "--lora_steps", "2"], "--calibration", "--eval"),  # recovery trains on it
    ],
)
def test_the_line_names_only_the_data_the_run_reads(
    flags, named, not_named, llama_dir, monkeypatch, capsys, no_loading
):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    line = refusal(main, ["--model", str(llama_dir), "--device", "cpu", *flags], capsys)
    assert f"with no {named} given" in line and f"{not_named} " not in line


def test_a_run_that_reads_no_data_is_not_refused_offline(llama_dir, monkeypatch, no_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = run_config(["--model", str(llama_dir), "--prune_method", "magnitude", "--eval", "none"])
    assert config.defaulted_sources == {}


@pytest.mark.parametrize("command, prog", [(search_cli.main, "dlp-search"), (evopress_cli.main, "dlp-evopress")])
def test_offline_the_searches_name_calibration(command, prog, llama_dir, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr("dlp_lib.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    line = refusal(command, ["--model", str(llama_dir), "--device", "cpu", "--quiet"], capsys, prog)
    assert "with no --calibration given" in line and "--calibration c4:<path to a C4 json.gz shard>" in line
    assert "--eval" not in line and "offline mode (TRANSFORMERS_OFFLINE)" in line


def test_offline_local_copies_pass_the_check(llama_dir, tmp_path, text_file, monkeypatch, hub_never_asked):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shard = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(shard, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "A document of the local C4 shard."}) + "\n")
    parquet = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["", " = Heading = ", "A line of WikiText-2."]}), parquet)
    for calibration, eval_ in ((f"c4:{shard}", f"wikitext2:{parquet}"), (str(text_file), "wiki-extracts")):
        config = run_config(["--model", str(llama_dir), "--calibration", calibration, "--eval", eval_])
        assert (config.calibration, config.eval) == (calibration, eval_) and config.defaulted_sources == {}


def test_offline_a_local_model_runs_on_local_data(tiny_model_dir, text_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run.json"
    argv = ["--model", str(tiny_model_dir), "--calibration", str(text_file), "--eval", str(text_file)]
    argv += ["--nsamples", "2", "--seqlen", "32", "--eval_windows", "2", "--device", "cpu", "--quiet"]
    assert main([*argv, "--save", str(out)]) == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["config"]["calibration"] == record["config"]["eval"] == str(text_file)
