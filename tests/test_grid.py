"""The experiment grid (dlp_lib.grid): the job list is the notebooks' runs, each once, in phases; the
local pool runs at most N at once and Ctrl-C cancels what was submitted; the Slurm sbatch script asks
for what was given; the dry run estimates; records-only mode refuses to compute.

Integration (the ``smoke_grid`` fixture in conftest runs the smoke profile's grid through submitit's
local executor with 2 workers): records equal to the sequential path's, a killed job leaves no record
and is submitted again by the next call; ``test_notebooks`` then renders every notebook from them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from dlp_lib import experiments as ex, grid
from dlp_lib.config import ConfigError
from dlp_lib.results import config_key, record_path


def _keys(jobs):
    return [config_key(j.config().to_dict()) for j in jobs if j.kind == "run" and not j.pending]


# ------------------------------------------------------------------------------------------ planning
def test_smoke_plan_is_every_notebook_run_once_in_phases(tmp_path):
    prof = ex.profile("smoke")
    jobs = grid.plan(prof, tmp_path)
    keys = _keys(jobs)
    assert len(keys) == len(set(keys)), "a run is listed twice"

    # what the notebooks ask for, written out independently of grid.plan (hyper-parameter runs
    # unfiltered: no statistics are stored yet)
    zs, rp = ex.zero_shot_profile(prof), ex.recovery_profile(prof)
    main = ex.main_specs(prof, recent=True) + ex.ria_specs(prof)  # ATP's rows wait for its beta
    asked = [ex.dense_spec(prof), *ex.seeded(prof, main), *ex.float_sensitivity_specs(prof)]
    asked += ex.sweep_specs(prof) + ex.hyper_specs(prof) + ex.nm_specs(prof)
    wanted = {config_key(ex.run_config(prof, **s).to_dict()) for s in asked}
    wanted |= {config_key(ex.run_config(zs, **s).to_dict()) for s in ex.seeded(prof, ex.zero_shot_specs(prof))}
    wanted |= {config_key(ex.run_config(rp, **s).to_dict()) for s in ex.recovery_specs(prof)}
    assert set(keys) == wanted

    phases = [j.phase for j in jobs]
    assert phases == sorted(phases)
    statistics = [j for j in jobs if j.kind == "statistics"]
    assert [j.profile["seed"] for j in statistics] == [0, 1]  # the smoke profile's seeds, one job each
    assert [j.kind for j in jobs if j.phase == 2].count("search") == 1
    pending = [j for j in jobs if j.pending]
    assert all(j.phase == 3 for j in pending)
    dsa = len(prof["main_methods"]) * len(prof["seeds"]) + prof["dsa_search"]["proxy_check"] - 1
    evopress = prof["evopress_search"]
    searched = len(evopress["methods"]) * (len(prof["seeds"]) + max(evopress["proxy_check"] - 2, 0))
    atp = len(prof["recent"]["methods"]) * len(prof["seeds"])
    assert len(pending) == dsa + searched + atp
    assert [j.spec for j in jobs if j.kind == "evopress"] == [{"method": m} for m in evopress["methods"]]
    assert [j.spec for j in jobs if j.kind == "atp"] == [{"method": m} for m in prof["recent"]["methods"]]
    assert not any(j.done(tmp_path) for j in jobs)


def test_plan_after_the_search_lists_the_dsa_rows_and_the_proxy_check(tmp_path, monkeypatch):
    prof = ex.profile("smoke")
    exprs = [f"W:({pre})-(MEAN)-()" for pre in ("ABS", "TANH", "SIGMOID", "EXP")]
    candidates = [
        {"expression": e, "fitness": 10.0 + k, "rank": k + 1, "shared_with": None} for k, e in enumerate(exprs)
    ]
    result = {"best": {"expression": exprs[0], "fitness": 10.0}, "candidates": candidates}
    monkeypatch.setattr(ex, "stored_dsa_search", lambda p, d: result)
    jobs = grid.plan(prof, tmp_path)
    third = [
        j for j in jobs
        if j.phase == 3 and "EvoPress" not in j.label and "searched allocation" not in j.label and "ATP" not in j.label
    ]  # fmt: skip
    assert not any(j.pending for j in third)
    graphs = [(j.spec["dsa_graph"], j.spec.get("seed")) for j in third]
    # the DSA row of each seed (its seed-0 run is also the proxy check's best pick), then the other picks
    assert graphs == [(exprs[0], 0), (exprs[0], 1), (exprs[2], None), (exprs[3], None)]
    # the job list names each run apart: the proxy check's picks differ only in their expression
    labels = [j.label for j in jobs if not j.pending]
    assert len(set(labels)) == len(labels)
    assert f"DSA {exprs[2]} (λ=" in third[2].label


def test_plan_after_evopress_lists_its_rows_and_its_checked_allocations(tmp_path, monkeypatch):
    from dlp_lib.evopress_file import FORMAT

    prof = ex.profile("smoke")
    sparsities = {"0.mlp.up_proj": 0.7}
    pick = {"levels": [1], "linear_sparsities": {"0.mlp.up_proj": 0.71}, "block_sparsities": [0.71], "kl": 0.5}
    result = {
        "format": FORMAT, "key": "k", "sparsity": 0.7, "settings": {"model": "m"}, "linear_sparsities": sparsities,
        "linear_sizes": {"0.mlp.up_proj": 100}, "block_sparsities": [0.7], "levels": [0], "fitness": 0.4,
        "checked": [{**pick, "generation": -1, "levels": [0]}, {**pick, "generation": 1}],
    }  # fmt: skip
    path = ex.evopress_path(prof, "wanda", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result))
    monkeypatch.setattr(ex, "stored_evopress", lambda p, m, d: result)
    jobs = [j for j in grid.plan(prof, tmp_path) if j.phase == 3 and "EvoPress" in j.label]
    assert not any(j.pending for j in jobs)
    # the EvoPress row on each seed, then the checked allocation of generation 1 (its start is the Uniform run)
    assert [(j.spec["evopress"], j.spec.get("seed")) for j in jobs] == [
        (str(path), 0),
        (str(path), 1),
        (str(ex.pick_path(prof, "wanda", 1, tmp_path)), None),
    ]
    assert (
        json.loads(ex.pick_path(prof, "wanda", 1, tmp_path).read_text())["linear_sparsities"]
        == pick["linear_sparsities"]
    )


def test_plan_leaves_out_the_hyper_parameter_runs_the_statistics_show_infeasible(tmp_path, monkeypatch):
    prof = ex.profile("smoke")
    everything = ex.hyper_specs(prof)
    feasible = everything[:1]
    stats = object()
    monkeypatch.setattr(grid.jobs, "read_cache", lambda path, load, what: stats)
    monkeypatch.setattr(ex, "feasible_hyper_specs", lambda s, p: (feasible, ["refused"]) if s is stats else None)
    monkeypatch.setattr(ex, "hyper_specs", lambda p: everything + [{**everything[0], "dlp_alpha": 0.45}])
    keys = set(_keys(grid.plan(prof, tmp_path)))
    assert config_key(ex.run_config(prof, **everything[0]).to_dict()) in keys
    assert config_key(ex.run_config(prof, **{**everything[0], "dlp_alpha": 0.45}).to_dict()) not in keys


def test_a_run_job_is_done_when_its_record_or_its_clipped_record_is_stored(tmp_path):
    prof = ex.profile("smoke")
    job = next(j for j in grid.plan(prof, tmp_path) if j.kind == "run" and j.spec.get("allocation") == "dlp")
    assert not job.done(tmp_path)
    clipped = ex.run_config(prof, **job.spec, clip_densities=True)
    path = record_path(tmp_path, clipped.to_dict())
    path.write_text(json.dumps({"config": json.loads(json.dumps(clipped.to_dict(), default=str))}))
    assert job.done(tmp_path)


# ---------------------------------------------------------------------------------------- estimating
def test_dry_run_for_paper_on_llama2_7b_prints_the_jobs_and_the_estimate(tmp_path, capsys):
    argv = ["--profile", "paper", "--model", "meta-llama/Llama-2-7b-hf", "--dry-run", "--results", str(tmp_path)]
    assert grid.main(argv) == 0
    out = capsys.readouterr().out
    jobs = grid.plan(ex.profile("paper", model="meta-llama/Llama-2-7b-hf"), tmp_path)
    assert f"{len(jobs)} jobs (0 already stored) in 4 phases" in out
    assert [j.kind for j in jobs if j.phase == 4] == ["speed"]
    assert f"| **all** | **{len(jobs)}** |" in out
    assert "GPU hours (estimate)" in out and "An estimate, not a measurement" in out and "x1.00 of LLaMA-2-7B" in out
    assert not list(tmp_path.iterdir()), "a dry run wrote something"


def test_estimate_scales_gpu_seconds_by_parameter_count():
    prof7 = ex.profile("paper", model="meta-llama/Llama-2-7b-hf")
    prof13 = ex.profile("paper", model="meta-llama/Llama-2-13b-hf")
    # the committed per-step seconds (a bench/results/gpu-7b.json from make bench-gpu would replace them)
    e7 = grid.estimate(grid.plan(prof7, "/nonexistent"), prof7, bench_dir="/nonexistent")
    e13 = grid.estimate(grid.plan(prof13, "/nonexistent"), prof13, bench_dir="/nonexistent")
    ratio = e13["kinds"]["wanda"]["seconds"] / e7["kinds"]["wanda"]["seconds"]
    assert ratio == pytest.approx(13.02 / 6.74)
    # a 7B Wanda run: loading + pruning + WikiText-2 perplexity, from the per-step seconds
    gpu = grid.GPU_7B_SECONDS
    perplexity = gpu["floor"] / (128 * 2048) * grid.WIKITEXT2_TEST_TOKENS / 0.94
    assert e7["kinds"]["wanda"]["seconds_each"] == pytest.approx(gpu["load"] + gpu["wanda"] + perplexity)


def test_the_estimate_of_a_sparsegpt_run_follows_its_hessian_arithmetic():
    """On CUDA "auto" is the half Hessian; the reference's fp32 one costs its own, larger, figure."""
    gpu = grid.GPU_7B_SECONDS
    estimates = {}
    for hessian in ("auto", "fp32"):
        prof = ex.profile("paper", sparsegpt_hessian=hessian)
        jobs = [j for j in grid.plan(prof, "/nonexistent") if j.kind == "run" and not j.pending]
        job = next(j for j in jobs if j.config().prune is not None and j.config().prune.method == "sparsegpt")
        estimates[hessian] = grid.job_seconds(job, prof, 1.0, gpu)[1]
    assert estimates["fp32"] - estimates["auto"] == pytest.approx(gpu["sparsegpt fp32 Hessian"] - gpu["sparsegpt"])


def test_a_committed_gpu_bench_replaces_the_default_seconds_with_its_plain_runs(tmp_path):
    """bench/gpu.py's JSON, its run labels as written: each method's plain run (uniform, unstructured, no
    offload, default arithmetic) gives that method's seconds; the variants of a run do not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).parents[1] / "bench" / "gpu.py")
    gpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bench)
    runs = [{"run": label, "seconds": 100.0 + i} for i, (label, *_) in enumerate(gpu_bench.RUNS)]
    bench = {"floor_seconds": 5.5, "dense_statistics_seconds": 6.5, "runs": runs, "hardware": {"gpu": "H200"}}
    (tmp_path / "gpu-7b.json").write_text(json.dumps(bench))
    seconds, source = grid.gpu_seconds_7b(tmp_path)
    by_label = {r["run"]: r["seconds"] for r in runs}
    methods = ("magnitude", "wanda", "sparsegpt", "sparsegpt fp32 Hessian")
    assert {k: seconds[k] for k in ("floor", "dense_statistics", *methods)} == {
        "floor": 5.5, "dense_statistics": 6.5, **{method: by_label[method] for method in methods},
    }  # fmt: skip
    assert seconds["load"] == grid.GPU_7B_SECONDS["load"] and source == f"{tmp_path / 'gpu-7b.json'} (H200)"


@pytest.mark.parametrize(
    "spec, params",
    [("meta-llama/Llama-2-7b-hf", 6.74e9), ("meta-llama/Meta-Llama-3-8B", 8.03e9), ("Qwen/Qwen2-1.5B", 1.5e9),
     ("HuggingFaceTB/SmolLM2-360M", 360e6), ("smollm2-135m", 135e6)],
)  # fmt: skip
def test_model_parameters_from_the_name(spec, params):
    assert grid.model_parameters(spec) == pytest.approx(params)


def test_model_parameters_from_a_local_config_or_refused(tmp_path, tiny_model_dir):
    from conftest import TINY

    h, i, layers = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    vocab = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    kv = h * 2 // TINY["num_attention_heads"]  # 2 key/value heads
    block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    assert grid.model_parameters(str(tiny_model_dir)) == layers * block + 2 * vocab * h + h
    with pytest.raises(ConfigError, match="--params"):
        grid.model_parameters("someone/mystery-model")


# ------------------------------------------------------------------------------------------ executing
class FakeHandle:
    def __init__(self, job_id, finish_after=1, error=None):
        self.job_id, self.polls, self.finish_after, self.error = job_id, 0, finish_after, error
        self.cancelled = False
        self.paths = type("Paths", (), {"stderr": Path(f"/logs/{job_id}_0_log.err")})()

    def done(self):
        self.polls += 1
        return self.polls > self.finish_after

    def exception(self):
        return None if self.error is None else RuntimeError(f"Traceback ...\n\n{self.error}")

    def cancel(self, check=True):
        self.cancelled = True


class FakeExecutor:
    def __init__(self, errors=(), finish_after=lambda job: 1):
        self.handles, self.params, self.running, self.most = [], [], 0, 0
        self.errors, self.finish_after = set(errors), finish_after

    def update_parameters(self, **params):
        self.params.append(params)

    def submit(self, fn, job, results_dir, threads):
        error = "ConfigError: boom" if job.label in self.errors else None
        handle = FakeHandle(len(self.handles), self.finish_after(job), error)
        self.handles.append(handle)
        live = sum(1 for h in self.handles if h.polls <= h.finish_after)
        self.most = max(self.most, live)
        return handle


def _jobs(n):
    return [grid.GridJob("run", 2, f"job {k}", {}, {}) for k in range(n)]


def test_local_pool_runs_at_most_its_slots_and_gives_each_a_gpu():
    executor = FakeExecutor(errors={"job 3"})
    backend = grid.Backend(executor, slots=2, per_job=lambda slot: {"visible_gpus": (slot,)})
    backend.poll_seconds = 0
    outcomes = backend.run(_jobs(5), "results")
    assert [o.state for o in outcomes] == ["done", "done", "done", "failed", "done"]
    assert outcomes[3].error == "ConfigError: boom" and outcomes[3].log == "/logs/3_0_log.err"
    assert executor.most == 2
    assert sorted({p["visible_gpus"] for p in executor.params}) == [(0,), (1,)]


def test_ctrl_c_cancels_every_submitted_job_that_has_not_finished():
    executor = FakeExecutor(finish_after=lambda job: 1 if job.label == "job 0" else 10**6)
    backend = grid.Backend(executor, slots=3)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    backend.poll_seconds = 0
    original = time.sleep
    try:
        grid.execute.time.sleep = lambda s: interrupt()
        with pytest.raises(KeyboardInterrupt):
            backend.run(_jobs(5), "results")
    finally:
        grid.execute.time.sleep = original
    # three submitted (the slots), job 0 finished, the two running ones cancelled, the rest never submitted
    assert [h.cancelled for h in executor.handles] == [False, True, True]


def test_summary_lists_failed_jobs_with_their_log():
    job = _jobs(1)[0]
    summary = grid.Summary([grid.Outcome(job, "failed", 3.0, "/logs/7_0_log.err", "ConfigError: no", "7")], skipped=4)
    text = "\n".join(summary.lines())
    assert "1 failed; 4 already stored" in text and "job 0: ConfigError: no" in text and "/logs/7_0_log.err" in text


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """``sbatch`` (accepts every script, answers like Slurm) and ``srun`` (submitit looks for it) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [
        ("sbatch", 'echo "$@" >> "$(dirname "$0")/calls"\necho "Submitted batch job 4242"'),
        ("srun", "exit 0"),
    ]:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_submission_writes_the_sbatch_script_asked_for(tmp_path, fake_sbatch, capsys):
    results = tmp_path / "results"
    argv = ["--profile", "smoke", "--executor", "slurm", "--partition", "gpu-long", "--gpus", "2", "--time", "90",
            "--mem", "64", "--parallel", "1", "--no-wait",
            "--results", str(results), "--logs", str(tmp_path / "logs")]  # fmt: skip
    assert grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 submitted" in out and "run the same command again" in out
    scripts = list((tmp_path / "logs").glob("*submission.sh"))
    assert len(scripts) == 1, "one array for phase 1"
    text = scripts[0].read_text()
    for line in ("#SBATCH --gpus-per-node=2", "#SBATCH --partition=gpu-long", "#SBATCH --time=90",
                 "#SBATCH --mem=64GB", "#SBATCH --array=0-1%1", "#SBATCH --job-name=dlp-grid"):  # fmt: skip
        assert line in text, f"{line!r} not in the sbatch script:\n{text}"
    assert (fake_sbatch / "calls").read_text().count("\n") == 1
    assert not list(results.glob("*.json")), "nothing ran"


def test_bad_grid_arguments_are_refused_before_anything_is_submitted(tmp_path, capsys):
    for argv, message in [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--no-wait"], "--no-wait is for --executor slurm"),
        (["--profile", "nope"], "unknown profile 'nope'"),
    ]:
        assert grid.main([*argv, "--results", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# -------------------------------------------------------------------------------------- records only
def test_records_only_mode_refuses_to_compute(tmp_path, monkeypatch):
    from dlp_lib import pipeline

    monkeypatch.setenv(ex.RECORDS_ONLY_ENV, "1")
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("a run was computed"))
    monkeypatch.setattr("dlp_lib.heap.keep_freed_memory", lambda: pytest.fail("the heap was set up to compute"))
    prof = ex.profile("smoke")
    with pytest.raises(ConfigError, match="no record of wanda · DLP .* DLP_RECORDS_ONLY=1 forbids computing it"):
        ex.run_specs(prof, [{"method": "wanda", "allocation": "dlp"}], tmp_path)
    with pytest.raises(ConfigError, match="no dense statistics table"):
        ex.dense_statistics(prof, results_dir=tmp_path)
    with pytest.raises(ConfigError, match="no DSA search result"):
        ex.dsa_search(prof, tmp_path)
    assert not list(tmp_path.rglob("*.json"))


# --------------------------------------------------------------------------------------- integration
SEQUENTIAL = [
    {"method": None},
    {"method": "wanda", "sparsity": 0.7, "allocation": "dlp", "seed": 1},
    {"method": "magnitude", "sparsity_type": "2:4", "allocation": "dlp"},
]


@pytest.mark.integration
def test_grid_records_equal_the_sequential_path(smoke_grid, tmp_path):
    """Each job ran in its own process with 1 thread; the same settings run here in this process (1
    thread) give the same record key and bit-identical perplexities and block sparsities."""
    import torch

    prof = ex.profile("smoke")
    assert smoke_grid["summary"].failed == [] and smoke_grid["summary"].stopped is None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for spec in SEQUENTIAL:
            config, record, cached = ex.run_spec(prof, spec, tmp_path)
            assert not cached
            stored = json.loads(record_path(smoke_grid["results"], config.to_dict()).read_text())
            assert stored["config"] == record["config"]
            assert stored["perplexity"]["perplexity"] == record["perplexity"]["perplexity"]
            assert stored["pruning"]["block_achieved"] == record["pruning"]["block_achieved"]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.integration
def test_a_killed_job_leaves_no_record_and_the_next_call_submits_only_it(smoke_grid, tmp_path):
    prof = ex.profile("smoke")
    results = smoke_grid["results"]
    victim = ex.run_config(prof, "wanda", 0.7, "owl", seed=1)
    path = record_path(results, victim.to_dict())
    before = json.loads(path.read_text())
    path.unlink()
    assert [j.label for j in grid.plan(prof, results) if not j.pending and not j.done(results)] == [
        ex.run_label(victim)
    ]

    def kill_when_running(job, handle):  # SIGKILL the worker process 2 s into its work (which takes ~6 s)
        for _ in range(1200):
            log = Path(handle.paths.stderr)
            if log.is_file() and "started: " in log.read_text():
                time.sleep(2)
                worker = subprocess.run(["pgrep", "-P", str(handle.job_id)], capture_output=True, text=True)
                subprocess.run(["kill", "-KILL", *worker.stdout.split()], check=True)
                return
            time.sleep(0.05)
        pytest.fail("the job never started its work")

    backend = grid.local_backend(tmp_path / "logs", 2, [], timeout_min=20, threads=1)
    outcomes = backend.run([j for j in grid.plan(prof, results) if j.label == ex.run_label(victim)], str(results),
                           on_start=kill_when_running)  # fmt: skip
    assert [o.state for o in outcomes] == ["failed"] and outcomes[0].log
    assert outcomes[0].error.startswith("the job ended without a result (killed")
    assert "perplexity" not in Path(outcomes[0].log).read_text(), "the job finished before it was killed"
    assert not path.exists(), "a killed job left a record"
    assert not [p for p in results.rglob("*") if p.is_file() and p.suffix not in (".json",)], "a partial file was left"

    summary = grid.run_grid(prof, results, grid.local_backend(tmp_path / "logs2", 2, [], timeout_min=20, threads=1))
    assert [(o.job.label, o.state) for o in summary.outcomes] == [(ex.run_label(victim), "done")]
    after = json.loads(path.read_text())
    assert after["perplexity"]["perplexity"] == before["perplexity"]["perplexity"]


def test_plan_after_the_atp_choice_lists_the_atp_rows(tmp_path, monkeypatch):
    prof = ex.profile("smoke")
    monkeypatch.setattr(ex, "stored_atp_choice", lambda p, m, d: {"best": 0.01, "perplexity": [1.0]})
    jobs = grid.plan(prof, tmp_path)
    rows = [j for j in jobs if j.phase == 3 and j.spec is not None and j.spec.get("allocation") == "atp"]
    assert [(j.spec["method"], j.spec["atp_beta"], j.spec["seed"]) for j in rows] == [
        ("wanda", 0.01, seed) for seed in prof["seeds"]
    ]
    assert not any(j.pending and "ATP" in j.label for j in jobs)
    assert all(j.done(tmp_path) for j in jobs if j.kind == "atp")
