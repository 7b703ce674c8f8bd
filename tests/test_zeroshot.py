"""Zero-shot accuracy through lm-eval on the shipped task data (dlp_lib.zeroshot), offline."""

from __future__ import annotations

import json
import math
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_model

from dlp_lib import zeroshot
from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.zeroshot import TaskDataError, build_task_files, zero_shot

# lm-eval's splits: BoolQ/RTE/HellaSwag/WinoGrande/PIQA validation, ARC-e/ARC-c/OBQA test
ROWS = {
    "boolq": 3270,
    "rte": 277,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "openbookqa": 500,
    "piqa": 1838,
}


@pytest.fixture(scope="module")
def task_dir():
    """The converted task files in the default dlp_lib cache (built once, reused afterwards)."""
    return build_task_files()


@pytest.fixture(scope="module")
def tiny(embedded_tokenizer):
    """A tiny random LLaMA over the embedded tokenizer's vocabulary, and that tokenizer."""
    return make_tiny_model("llama", vocab_size=len(embedded_tokenizer)), embedded_tokenizer


# ------------------------------------------------------------------------------------------ task files
def test_converted_files_have_lm_evals_row_counts(task_dir):
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert set(manifest["tasks"]) == set(ROWS)
    for name, rows in ROWS.items():
        entry = manifest["tasks"][name]
        lines = (task_dir / entry["file"]).read_text(encoding="utf-8").splitlines()
        assert len(lines) == rows == entry["rows"], name
        assert entry["split"] == ("test" if name in ("arc_easy", "arc_challenge", "openbookqa") else "validation")
    # spot-check the schemas lm-eval's configs read
    first = lambda name: json.loads((task_dir / manifest["tasks"][name]["file"]).open().readline())
    assert set(first("boolq")) == {"passage", "question", "label"} and first("boolq")["label"] in (0, 1)
    arc = first("arc_challenge")
    assert arc["answerKey"] in arc["choices"]["label"] and len(arc["choices"]["text"]) == len(arc["choices"]["label"])
    assert not arc["question"].startswith("Question:") and not arc["question"].endswith("Answer:")
    assert "question_stem" in first("openbookqa")
    assert first("winogrande")["answer"] in ("1", "2")


def test_generated_yamls_use_absolute_existing_paths(task_dir):
    for name, spec in zeroshot.TASKS.items():
        config = yaml.safe_load((task_dir / f"{name}_local.yaml").read_text())
        assert config["task"] == f"{name}_local" == spec.local
        include = Path(config["include"])
        assert include.is_absolute() and include.is_file() and include.parts[-3:-1] != ()
        assert "lm_eval" in include.parts and include.name == Path(spec.stock_yaml).name
        files = config["dataset_kwargs"]["data_files"]
        assert list(files) == [spec.split] and config[f"{spec.split}_split"] == spec.split
        data = Path(files[spec.split])
        assert data.is_absolute() and data.is_file() and data.parent == task_dir
        assert config["dataset_path"] == "json" and config["tag"] == []


def test_build_is_reused_and_interrupted_builds_leave_nothing(tmp_path, monkeypatch):
    def fail(spec, root):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the conversion

    monkeypatch.setattr(zeroshot.files, "_convert", fail)
    with pytest.raises(KeyboardInterrupt):
        build_task_files(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-built cache, no temporary directory


def test_row_count_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(zeroshot.TASKS, "boolq", replace(zeroshot.TASKS["boolq"], rows=3271))
    with pytest.raises(TaskDataError, match=r"boolq: 3270 rows .* expected 3271"):
        build_task_files(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_complete_cache_is_reused(task_dir, monkeypatch):
    monkeypatch.setattr(zeroshot.files, "_convert", lambda spec, root: pytest.fail("converted again"))
    assert build_task_files() == task_dir


# ----------------------------------------------------------------------------------------- task names
def test_task_names_map_to_local_tasks():
    assert zeroshot.resolve_tasks(None) == list(zeroshot.PAPER_TASKS)
    assert zeroshot.resolve_tasks("RTE, boolq_local,arc-easy,obqa,rte") == ["rte", "boolq", "arc_easy", "openbookqa"]
    assert [zeroshot.TASKS[n].local for n in zeroshot.resolve_tasks(["piqa"])] == ["piqa_local"]


def test_unknown_task_is_a_config_error_before_any_work(monkeypatch):
    monkeypatch.setattr(zeroshot.evaluate, "build_task_files", lambda *a, **k: pytest.fail("did work"))
    with pytest.raises(ConfigError, match=r"'sglue_rte'.*known: boolq, rte, hellaswag"):
        zero_shot(None, None, tasks=["boolq", "sglue_rte"])
    with pytest.raises(ConfigError, match="limit"):
        zero_shot(None, None, tasks=["boolq"], limit=0)
    with pytest.raises(ConfigError, match="source"):
        zero_shot(None, None, tasks=["boolq"], source="web")


# ------------------------------------------------------------------------------------------------ runs
@pytest.mark.integration
def test_tiny_model_run_reports_accuracies_versions_and_settings(tiny, task_dir):
    model, tokenizer = tiny
    result = zero_shot(model, tokenizer, tasks=["rte", "arc_challenge", "openbookqa"], limit=6, batch_size=4)
    assert list(result["tasks"]) == ["rte", "arc_challenge", "openbookqa"]
    for name, entry in result["tasks"].items():
        assert 0.0 <= entry["acc"] <= 1.0 and entry["n"] == 6 and entry["n_split"] == ROWS[name]
        assert entry["task"] == f"{name}_local" and entry["version"] == result["versions"][name]
        assert entry["acc_stderr"] is not None
    assert "acc_norm" not in result["tasks"]["rte"]  # RTE defines acc only
    assert 0.0 <= result["tasks"]["openbookqa"]["acc_norm"] <= 1.0
    accs = [e["acc"] for e in result["tasks"].values()]
    assert math.isclose(result["mean_acc"], sum(accs) / 3)
    norm = [
        result["tasks"]["rte"]["acc"],
        result["tasks"]["arc_challenge"]["acc_norm"],
        result["tasks"]["openbookqa"]["acc_norm"],
    ]
    assert math.isclose(result["mean_acc_norm"], sum(norm) / 3)
    assert result["versions"] == {"rte": 1.0, "arc_challenge": 1.0, "openbookqa": 1.0}
    settings = result["settings"]
    assert settings["lm_eval"].startswith("0.4.")
    wanted = {"batch_size": 4, "add_bos_token": False, "limit": 6, "num_fewshot": 0, "source": "local"}
    assert {k: settings[k] for k in wanted} == wanted
    assert result["seconds"] > 0
    json.dumps(result)  # JSON-serialisable
    assert not model.training


def test_offline_no_socket_is_opened(tiny, task_dir, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")

    class NoNetwork(socket.socket):
        def __init__(self, *args, **kwargs):
            raise AssertionError("network access attempted")

    def no_lookup(*args, **kwargs):
        raise AssertionError("DNS lookup attempted")

    monkeypatch.setattr(socket, "socket", NoNetwork)
    monkeypatch.setattr(socket, "create_connection", no_lookup)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    model, tokenizer = tiny
    result = zero_shot(model, tokenizer, tasks=["hellaswag", "winogrande"], limit=4, batch_size=4)
    assert {e["n"] for e in result["tasks"].values()} == {4}


def test_zero_shot_leaves_the_offline_flags_as_they_were(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with zeroshot.hub_offline():
        import os

        assert os.environ["HF_DATASETS_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in __import__("os").environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before


@pytest.mark.integration
def test_pruned_in_memory_model_scores_differently(embedded_tokenizer, task_dir, monkeypatch):
    """lm-eval sees the in-memory (pruned) weights, not a copy reloaded from disk: the log-likelihoods
    it computes change after pruning, and are reproducible for the same weights."""
    from lm_eval.models.huggingface import HFLM

    from dlp_lib.prune import prune_model

    calls = []
    original = HFLM.loglikelihood

    def spy(self, requests, *args, **kwargs):
        out = original(self, requests, *args, **kwargs)
        calls.append([ll for ll, _ in out])
        return out

    monkeypatch.setattr(HFLM, "loglikelihood", spy)
    model = make_tiny_model("llama", seed=1, vocab_size=len(embedded_tokenizer))
    run = lambda: zero_shot(model, embedded_tokenizer, tasks=["arc_easy"], limit=4, batch_size=8)
    dense, dense_again = run(), run()
    prune_model(model, PruneConfig("magnitude", 0.9), progress=False)
    pruned = run()
    assert len(calls) == 3 and len(calls[0]) == 16  # 4 questions x 4 choices
    assert calls[0] == calls[1]
    assert all(abs(a - b) > 1e-6 for a, b in zip(calls[0], calls[2]))
    assert dense["tasks"] == dense_again["tasks"]
    assert pruned["tasks"]["arc_easy"]["n"] == 4


# ---------------------------------------------------------------------------------- pipeline and CLI
def test_run_config_validates_zero_shot_tasks_and_keeps_old_hashes():
    from dlp_lib import pipeline

    config = pipeline.RunConfig(prune=None, eval=None, zero_shot_tasks=("rte", "nope"))
    with pytest.raises(ConfigError, match="nope"):
        pipeline.validate(config)
    # records of runs without zero-shot keep their configuration dict (and hash) unchanged
    assert not any(k.startswith("zero_shot") for k in pipeline.RunConfig().to_dict())
    on = pipeline.RunConfig(zero_shot_tasks=("rte",), zero_shot_limit=4).to_dict()
    assert on["zero_shot_tasks"] == ["rte"] and on["zero_shot_limit"] == 4 and on["zero_shot_bos"] is False


def test_cli_unknown_task_exits_2_before_loading(monkeypatch, capsys, tiny_model_dir):
    from dlp_lib import pipeline
    from dlp_lib.cli import main

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    status = main(["--model", str(tiny_model_dir), "--prune_method", "dense", "--eval", "none", "--eval_zero_shot"]
                  + ["--tasks", "rte,mmlu", "--quiet"])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "'mmlu'" in err and "known: boolq" in err


@pytest.mark.integration
def test_cli_eval_zero_shot_writes_the_record(tiny_model_dir, task_dir, tmp_path, capsys):
    from dlp_lib.cli import main
    from dlp_lib.results import load_record

    out_path = tmp_path / "out.json"
    args = ["--model", str(tiny_model_dir), "--device", "cpu", "--prune_method", "magnitude",
            "--sparsity_ratio", "0.5", "--eval", "none", "--eval_zero_shot", "--tasks", "rte,boolq",
            "--limit", "4", "--zero_shot_batch_size", "4", "--save", str(out_path), "--quiet"]  # fmt: skip
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    record = load_record(out_path)
    zero = record["zero_shot"]
    assert list(zero["tasks"]) == ["rte", "boolq"]
    assert all(0 <= e["acc"] <= 1 and e["n"] == 4 for e in zero["tasks"].values())
    assert zero["settings"]["limit"] == 4 and zero["settings"]["batch_size"] == 4
    assert record["config"]["zero_shot_tasks"] == ["rte", "boolq"] and record["config"]["zero_shot_limit"] == 4
    assert record["timings"]["zero_shot"] > 0 and record["pruning"]["overall_achieved"] > 0.49
    assert f"mean acc {zero['mean_acc']:.4f}" in out


def test_only_the_expected_lm_eval_warnings_are_dropped(caplog):
    import logging

    from dlp_lib.zeroshot import quiet_expected_warnings

    task_log, evaluator_log = logging.getLogger("lm_eval.api.task"), logging.getLogger("lm_eval.evaluator")
    with caplog.at_level(logging.WARNING), quiet_expected_warnings():
        task_log.warning("[Task: boolq_local] metric acc is defined, but aggregation is not. using default")
        evaluator_log.warning("Overwriting default num_fewshot of rte_local from None to 0")
        task_log.warning("something the user should see")
    assert [r.getMessage() for r in caplog.records] == ["something the user should see"]
    task_log.warning("Overwriting default num_fewshot of x")  # the filter is gone afterwards
    assert len(caplog.records) == 2


# ------------------------------------------------------------------------- logits only where read
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_continuation_logits_give_the_whole_tensors_scores(arch, embedded_tokenizer):
    """lm-eval's scores with the output layer skipped on positions no continuation reads equal HFLM's on
    the whole logits: the same greedy flags and log-likelihoods to float rounding, over rows of mixed
    context and continuation lengths in one batch (and a prefix two contexts share, which skips less)."""
    from lm_eval.models.huggingface import HFLM

    from dlp_lib.zeroshot.continuation_lm import continuation_lm_class, keeps_logits, row_key

    model = make_tiny_model(arch, vocab_size=len(embedded_tokenizer))
    assert keeps_logits(model)
    g = torch.Generator().manual_seed(1)
    tokens = lambda n: torch.randint(1, 500, (n,), generator=g).tolist()
    shared = tokens(20)
    requests = [((f"c{i}", f"x{i}"), ctx, tokens(cont)) for i, (ctx, cont) in enumerate(
        [(tokens(40), 3), (tokens(37), 9), (tokens(30), 1), (shared + tokens(5), 2), (shared, 4), (tokens(12), 6)]
    )]  # fmt: skip
    whole = HFLM(pretrained=model, tokenizer=embedded_tokenizer, batch_size=8)
    trimmed = continuation_lm_class()(pretrained=model, tokenizer=embedded_tokenizer, batch_size=8)
    skips = []
    batch_skip = trimmed.batch_skip
    trimmed.batch_skip = lambda inps: skips.append(batch_skip(inps)) or skips[-1]
    expected = whole._loglikelihood_tokens(requests, disable_tqdm=True)
    got = trimmed._loglikelihood_tokens(requests, disable_tqdm=True)
    # the batch's smallest context (12 tokens) predicts its first continuation token at position 11
    assert skips == [11]
    assert [flag for _, flag in got] == [flag for _, flag in expected]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], rel=1e-5, abs=1e-5)
    assert trimmed._skips is None  # nothing kept between calls
    # a row no request produced is never trimmed
    trimmed._skips = {row_key(shared): 20}
    assert batch_skip(torch.tensor([shared + [0] * 4, tokens(24)])) == 0
    assert batch_skip(torch.tensor([shared + [0] * 4])) == 20
    assert row_key([5, 6]) == (5, 6) + (0,) * 14
