"""The paper protocol rehearsed offline (dlp_lib.rehearsal, the `rehearsal` profile, the `hub:<dir>` zero-shot
source, bench/rehearse_gpu.py on the CPU).

- the assets are in the hub sources' own formats and read by the `paper` profile's loaders;
- the rehearsal profile is the paper profile with every list kept and only counts cut;
- (integration) `make reproduce PROFILE=rehearsal` runs every notebook on the tiny fp16 LLaMA, computing each
  run, and writes every table and figure, which pass their own reproduction check.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from dlp_lib import experiments as ex, preflight, rehearsal, reproduction, zeroshot
from dlp_lib.config import ConfigError
from dlp_lib.data import calibration_windows, evaluation_windows, read_documents, training_windows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The rehearsal's files, built once into a temporary DLP_REHEARSAL_DIR (set for the module's tests)."""
    root = tmp_path_factory.mktemp("rehearsal-assets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rehearsal.DIR_ENV, str(root))
        rehearsal.build_assets()
        yield rehearsal.paths(root)


@pytest.fixture(scope="module")
def tokenizer(assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets["model"])


# ---------------------------------------------------------------------------------------------- assets
def test_c4_shard_has_the_hubs_schema_and_long_and_short_documents(assets, tokenizer):
    with gzip.open(assets["c4"], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert all(set(row) == {"text", "timestamp", "url"} for row in rows)
    lengths = [len(tokenizer(row["text"]).input_ids) for row in rows]
    assert sum(n > 2048 for n in lengths) >= 100  # windows of 2048 for the papers' sampler
    assert sum(n <= 2048 for n in lengths) >= 100  # and documents it must reject
    assert assets["c4"].name == "c4-train.00000-of-01024.json.gz"


def test_the_paper_loaders_read_the_local_forms(assets, tokenizer):
    calibration = calibration_windows(f"c4:{assets['c4']}", tokenizer, nsamples=3, seqlen=2048, seed=0, cache=False)
    assert calibration.shape == (3, 2048)
    again = calibration_windows(f"c4:{assets['c4']}", tokenizer, nsamples=3, seqlen=2048, seed=0, cache=False)
    assert torch.equal(calibration, again)
    evaluation = evaluation_windows(f"wikitext2:{assets['wikitext2']}", tokenizer, seqlen=2048, cache=False)
    assert evaluation.shape[0] >= 2 and evaluation[0, 0].item() == tokenizer.bos_token_id == 1  # LLaMA's BOS first
    rows = read_documents(assets["wikitext2"])
    assert rows[:3] == ["", rows[1], ""] and re.fullmatch(r" = .+ = \n", rows[1])  # WikiText's markup
    training = training_windows(f"c4:{assets['c4']}", tokenizer, seqlen=1024, count=4, cache=False)
    assert training.shape == (4, 1024)


def test_zero_shot_files_are_the_stock_configs_hub_datasets(assets):
    """Each task's hub file sits under the dataset and config lm-eval's stock YAML names, with the stock
    schema's fields."""
    tasks_dir = zeroshot._lm_eval_tasks_dir()
    for name in zeroshot.PAPER_TASKS:
        spec = zeroshot.TASKS[name]
        stock = (tasks_dir / spec.stock_yaml).read_text()
        include = re.search(r"^include: (\S+)", stock, re.M)
        if include:  # arc_challenge: dataset_path comes from arc_easy.yaml
            stock = (tasks_dir / spec.stock_yaml).parent.joinpath(include.group(1)).read_text() + stock
        path = re.findall(r"^dataset_path: (\S+)", stock, re.M)[-1]
        config = re.findall(r"^dataset_name: (\S+)", stock, re.M)[-1]
        assert spec.hub == (path, "default" if config == "null" else config), name
        file = zeroshot.hub_file(assets["zero_shot"], name)
        assert file.is_file() and file.name == f"{spec.split}-00000-of-00001.parquet"
    import pyarrow.parquet as pq

    assert {"passage", "question", "label"} <= set(
        pq.read_schema(zeroshot.hub_file(assets["zero_shot"], "boolq")).names
    )
    assert {"question_stem", "choices", "answerKey"} <= set(
        pq.read_schema(zeroshot.hub_file(assets["zero_shot"], "openbookqa")).names
    )
    assert pq.read_metadata(zeroshot.hub_file(assets["zero_shot"], "hellaswag")).num_rows == rehearsal.TASK_ROWS


def test_tiny_llama_is_saved_as_hub_checkpoints_are(assets):
    from safetensors import safe_open

    config = json.loads((assets["model"] / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "float16"
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] % 8 == 0 and config["intermediate_size"] % 8 == 0
    with safe_open(assets["model"] / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}
    assert dtypes == {torch.float16}


def test_is_built_needs_every_file_and_says_how_to_build(assets, tmp_path):
    assert rehearsal.is_built(assets["model"].parent)
    assert not rehearsal.is_built(tmp_path)
    with pytest.raises(ConfigError, match="make rehearsal-assets"):
        rehearsal.require_built(tmp_path)
    (tmp_path / rehearsal.MANIFEST).write_text(json.dumps({"format": rehearsal.FORMAT_VERSION}))
    assert not rehearsal.is_built(tmp_path)  # a manifest without the files is not a set


def test_preflight_refuses_the_rehearsal_before_its_assets_are_built(tmp_path, monkeypatch):
    monkeypatch.setenv(rehearsal.DIR_ENV, str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="make rehearsal-assets"):
        preflight.check("rehearsal")


def test_preflight_passes_the_built_rehearsal_offline(assets, monkeypatch):
    monkeypatch.setenv(rehearsal.DIR_ENV, str(assets["model"].parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prof = preflight.check("rehearsal")
    assert prof["model"] == str(assets["model"])


def test_preflight_checks_the_lora_training_source(tmp_path):
    """A recovery that trains on a file that is not there is refused before any notebook starts."""
    quick = ex.profile("quick")
    recovery = {**quick["recovery"], "settings": {**quick["recovery"]["settings"], "data": str(tmp_path / "no.jsonl")}}
    with pytest.raises(ConfigError, match="unknown data source .*no.jsonl"):
        preflight.check("quick", recovery=recovery)


# ---------------------------------------------------------------------------------------------- profile
LISTS = ("main_methods", "allocations", "sweep", "sweep_allocations", "hyper_grid", "hyper_pruned", "nm", "seeds")


def test_rehearsal_is_the_paper_protocol_with_counts_cut(monkeypatch, tmp_path):
    monkeypatch.setenv(rehearsal.DIR_ENV, str(tmp_path))
    paper, rehearsed = ex.profile("paper"), ex.profile("rehearsal")
    for key in LISTS + ("main_sparsity", "seqlen", "eval_windows", "owl_lambda", "owl_m", "dlp_alpha", "dsa_graph"):
        assert rehearsed[key] == paper[key], key
    assert rehearsed["float_sensitivity"]["cells"] == paper["float_sensitivity"]["cells"]
    for key in ("tasks", "methods", "allocations", "add_bos_token"):
        assert rehearsed["zero_shot"][key] == paper["zero_shot"][key], key
    for key in ("methods", "allocations", "zero_shot"):
        assert rehearsed["recovery"][key] == paper["recovery"][key], key
    assert rehearsed["recovery"]["settings"]["seqlen"] == paper["recovery"]["settings"]["seqlen"] == 1024
    assert rehearsed["dsa_search"]["method"] == paper["dsa_search"]["method"]
    assert rehearsed["speedup"]["formats"] == paper["speedup"]["formats"]
    # the same loaders, on local forms of the same sources, in the rehearsal's directory
    assert rehearsed["calibration"] == f"c4:{tmp_path / rehearsal.C4_FILE}" and paper["calibration"] == "c4"
    assert rehearsed["eval"] == f"wikitext2:{tmp_path / rehearsal.WIKITEXT2_FILE}" and paper["eval"] == "wikitext2"
    assert rehearsed["recovery"]["settings"]["data"] == rehearsed["calibration"]
    assert zeroshot.parse_source(rehearsed["zero_shot"]["source"]) == ("hub", tmp_path / rehearsal.ZERO_SHOT_DIR)
    assert rehearsed["model"] == str(tmp_path / rehearsal.MODEL_DIR)
    # counts cut
    assert rehearsed["nsamples"] < paper["nsamples"] and rehearsed["zero_shot"]["limit"] == 2
    assert rehearsed["dsa_search"]["generations"] < paper["dsa_search"]["generations"]
    assert ex.profile("rehearsal", model="/elsewhere")["model"] == "/elsewhere"


def test_zero_shot_sources_are_checked(tmp_path):
    assert zeroshot.parse_source("local") == ("local", None)
    assert zeroshot.parse_source("hub") == ("hub", None)
    for bad in ("hub:", "files", "local:/x"):
        with pytest.raises(ConfigError, match="unknown zero-shot source"):
            zeroshot.parse_source(bad)
    with pytest.raises(ConfigError, match=r"missing .*aps/super_glue/boolq/validation-00000-of-00001.parquet"):
        zeroshot.check_zero_shot(["boolq"], f"hub:{tmp_path}")


def test_zero_shot_on_hub_files_runs_the_stock_tasks_offline(assets, tokenizer, monkeypatch):
    """The stock tasks (their own names) on the local hub files, with the hub unreachable."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32).eval()
    result = zeroshot.zero_shot(
        model, tokenizer, ["boolq", "arc_challenge"], limit=3, source=f"hub:{assets['zero_shot']}"
    )
    assert [t["task"] for t in result["tasks"].values()] == ["boolq", "arc_challenge"]
    assert [t["n"] for t in result["tasks"].values()] == [3, 3]
    assert result["settings"]["task_data"] == f"hub files in {assets['zero_shot']}"
    # the same rows and configs as the shipped-data source: the same accuracies, example by example
    local = zeroshot.zero_shot(model, tokenizer, ["boolq", "arc_challenge"], limit=3, source="local")
    assert [t["task"] for t in local["tasks"].values()] == ["boolq_local", "arc_challenge_local"]
    for name in ("boolq", "arc_challenge"):
        for metric in ("acc", "acc_norm"):
            assert result["tasks"][name].get(metric) == local["tasks"][name].get(metric), (name, metric)


def test_captions_say_how_c4_windows_are_made():
    from dlp_lib import reports

    assert "the papers' sampler" in ex.calibration_name("c4:/x/c4-train.00000-of-01024.json.gz")
    assert "sampler" not in ex.calibration_name("wiki-extracts")
    caption = reports.recovery_caption(ex.profile("paper"), [])
    assert "run_clm's grouping" in caption and "sampler" not in caption


# ------------------------------------------------------------------------------------- the GPU script
def test_gpu_rehearsal_script_runs_its_slice_on_the_cpu(assets, tmp_path, monkeypatch):
    """bench/rehearse_gpu.py on the tiny model: every job of its slice done, timed, and the paper profile
    projected per notebook beside the dry-run estimate."""
    monkeypatch.setenv(rehearsal.DIR_ENV, str(assets["model"].parent))
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import rehearse_gpu
    finally:
        sys.path.pop(0)
    args = ["--device", "cpu", "--shape", "tiny", "--nsamples", "2", "--lora_batch_tokens", "2048", "--budget", "600"]
    code = rehearse_gpu.main([*args, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "rehearsal-gpu.json").read_text())
    assert code == 0 and all(j["state"] == "done" for j in result["jobs"]) and not result["skipped"]
    kinds = [j["job"] for j in result["jobs"]]
    assert kinds[0] == {"kind": "statistics"}
    runs = {
        (k["method"], k["allocation"]) for k in kinds if k["kind"] == "run" and not k["zero_shot"] and not k["lora"]
    }
    assert {(m, a) for m in ("magnitude", "wanda", "sparsegpt") for a in ("uniform", "owl", "dlp", "dsa")} <= runs
    assert any(k.get("zero_shot") for k in kinds) and any(k.get("lora") for k in kinds)
    assert any(k["kind"] == "search" for k in kinds)
    units = result["projection"]["measured_units"]
    assert all(v is not None and v > 0 for v in units.values()), units
    notebooks = {row["notebook"][:2]: row for row in result["projection"]["notebooks"]}
    assert set(notebooks) == {"01", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"}
    assert any(k["kind"] == "evopress" for k in kinds)
    paper_jobs = len(__import__("dlp_lib.grid", fromlist=["plan"]).plan(ex.profile("paper"), tmp_path / "empty"))
    assert sum(row["jobs"] for row in notebooks.values()) == paper_jobs
    assert all(row["projected_hours"] > 0 and row["dry_run_hours"] > 0 for row in notebooks.values())
    assert "GPU-hours" in (tmp_path / "out" / "rehearsal-gpu.md").read_text()


def test_gpu_rehearsal_without_budget_or_lm_eval_projects_from_the_estimate(assets, tmp_path, monkeypatch):
    """No time left and no lm-eval (a bare GPU image): nothing runs, zero-shot is not even listed, and the
    projection is the dry-run estimate's figures, said so."""
    import importlib.util

    monkeypatch.setenv(rehearsal.DIR_ENV, str(assets["model"].parent))
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import rehearse_gpu
    finally:
        sys.path.pop(0)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else find_spec(name, *a)
    )
    args = [
        "--device",
        "cpu",
        "--shape",
        "tiny",
        "--budget",
        "0",
        "--work",
        str(tmp_path / "w"),
        "--out",
        str(tmp_path),
    ]
    assert rehearse_gpu.main(args) == 0
    result = json.loads((tmp_path / "rehearsal-gpu.json").read_text())
    assert result["jobs"] == [] and result["skipped"] and not any("zero-shot" in s for s in result["skipped"])
    assert "lm-eval is not installed" in result["missing"]
    assert all(v is None for v in result["projection"]["measured_units"].values())
    assert "Not measured (the estimate's figures instead)" in (tmp_path / "rehearsal-gpu.md").read_text()


# ------------------------------------------------------------------------------------------ the rehearsal
# main: dense, 3 pruners x (3 allocations + DSA), 2 EvoPress rows, Wanda's AlphaPruning, ATP and LSA rows
EXPECTED_RUNS = {"main": 1 + 3 * 4 + 2 + 3, "nm": 3 * 2 * 3, "zero_shot": 1 + 2 * 3, "recovery": 2 * 3}


@pytest.mark.integration
def test_make_reproduce_rehearsal_runs_every_notebook_on_the_tiny_llama(assets, tmp_path):
    """`make reproduce PROFILE=rehearsal` from scratch (nothing stored): every notebook computes its runs on
    the fp16 tiny LLaMA through the paper profile's loaders, writes its tables and figures into OUT, and the
    tables pass their own reproduction check."""
    from test_notebooks import EXPECTED

    out = tmp_path / "rehearsal"
    env = {**os.environ, rehearsal.DIR_ENV: str(assets["model"].parent), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        ["make", "-C", str(ROOT), "reproduce", "PROFILE=rehearsal", f"OUT={out}", f"MODEL={assets['model']}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for notebook, names in EXPECTED.items():
        assert (out / "executed" / f"{notebook}.ipynb").is_file(), notebook
        for name in names:
            if name == "speedup_end_to_end.csv":  # the paper profile measures the 7B model end to end on a GPU
                continue
            where = out / ("figures" if name.endswith(".png") else "tables") / name
            assert where.is_file() and where.stat().st_size > 0, f"{notebook} did not write {name}"
    tables = out / "tables"
    main = pd.read_csv(tables / "main_table.csv")
    assert len(main) == EXPECTED_RUNS["main"] and main["n"].tolist() == [1, 1] + [5] * 16  # magnitude-uniform: no seed
    assert main.loc[main["allocation"] == "evopress", "method"].tolist() == ["wanda", "sparsegpt"]
    assert set(
        pd.read_csv(tables / "nm_sparsity.csv")[["method", "sparsity_type", "allocation"]].itertuples(index=False)
    ) == {
        (m, p, a)
        for m in ("magnitude", "wanda", "sparsegpt")
        for p in ("2:4", "4:8")
        for a in ("uniform", "owl", "dlp")
    }
    zero_shot = pd.read_csv(tables / "zero_shot.csv")
    assert len(zero_shot) == EXPECTED_RUNS["zero_shot"] and zero_shot["n"].tolist() == [1] + [5] * 6
    assert len(pd.read_csv(tables / "lora_recovery.csv")) == EXPECTED_RUNS["recovery"]
    check = reproduction.check_tables(tables, tables)
    assert len(check) > 10 and (check["status"] == "ok").all()
    assert (out / "results").is_dir() and not (ROOT / "rehearsal").exists()
