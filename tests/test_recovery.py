"""LoRA recovery (dlp_lib.recovery): sparsity kept, only the adapter trains, the loss falls, masked
merging, the schedule, bad settings refused before work, and the pipeline/CLI/save round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY, make_tiny_model

from dlp_lib.config import ConfigError, PruneConfig
from dlp_lib.layers import decoder_blocks, linear_sublayers
from dlp_lib.prune import prune_model
from dlp_lib.recovery import (
    RecoveryConfig,
    learning_rate_factor,
    linear_names,
    merge_masked,
    recover,
    resolve_targets,
)


def counting_windows(count: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """Windows of consecutive token ids (mod the vocabulary): the next token is always the id + 1,
    a pattern a LoRA adapter on a random model learns in a few steps."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, TINY["vocab_size"], (count, 1), generator=g)
    return (starts + torch.arange(seqlen)) % TINY["vocab_size"]


def pruned_tiny(arch: str = "llama", sparsity: float = 0.7):
    """A tiny random model pruned by magnitude. Its LM head is scaled by 10: with the 0.02 initial std
    every logit stays below ~0.7 whatever the hidden state, so no adapter could lower the loss much."""
    model = make_tiny_model(arch)
    prune_model(model, PruneConfig(method="magnitude", sparsity=sparsity), None, progress=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    return model


def base_weights(model) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": linear.weight.detach().clone()
        for i, block in enumerate(decoder_blocks(model))
        for name, linear in linear_sublayers(block).items()
    }


SMALL = dict(steps=30, lr=3e-2, batch_tokens=64, seqlen=16, micro_batch=2, warmup_steps=2, heldout_windows=2)


# --------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank must be positive"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"lr": 0.0}, "learning rate (lr) must be > 0"),
        ({"lr": -1e-4}, "learning rate (lr) must be > 0"),
        ({"alpha": 0}, "alpha must be > 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"targets": ()}, "at least one LoRA target"),
        ({"targets": "q_proj,"}, "at least one LoRA target"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"batch_tokens": 100, "seqlen": 64}, "multiple of the training window length (64), e.g. 64"),
        ({"micro_batch": 0}, "micro_batch"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        RecoveryConfig(**kwargs)


def test_defaults_are_the_papers_recipe():
    c = RecoveryConfig()
    assert (c.rank, c.alpha, c.dropout, c.lr, c.warmup_steps) == (8, 16.0, 0.05, 1e-4, 5)
    assert c.targets == ("q_proj", "v_proj")
    assert c.batch_tokens == 128 * 1024 and c.windows_per_step(1024) == 128
    assert RecoveryConfig(targets="q_proj, k_proj").targets == ("q_proj", "k_proj")


def test_unknown_target_lists_the_models_linears():
    model = make_tiny_model("opt")
    with pytest.raises(ConfigError) as err:
        resolve_targets(model, ["gate_proj"])
    assert "'gate_proj'" in str(err.value)
    for name in ("self_attn.k_proj", "self_attn.out_proj", "fc1", "fc2"):
        assert name in str(err.value)
    assert resolve_targets(model, ["self_attn.q_proj", "fc1"]) == ["self_attn.q_proj", "fc1"]
    assert resolve_targets(make_tiny_model("llama"), ["all"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_learning_rate_schedule_by_hand():
    # 5 warm-up steps of 20: 1/5 .. 5/5, then (20 - s) / 15 down to 1/15 at the last step
    factors = [learning_rate_factor(s, 5, 20) for s in range(20)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5] == pytest.approx(1.0) and factors[19] == pytest.approx(1 / 15)
    assert learning_rate_factor(0, 0, 4) == 1.0


# ---------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained():
    model = pruned_tiny()
    before = base_weights(model)
    windows = counting_windows(40, 16)
    adapted, report = recover(model, RecoveryConfig(**SMALL), windows[:-2], windows[-2:], seed=0, progress=False)
    return before, adapted, report


def test_pruned_weights_stay_exactly_zero_and_the_base_does_not_move(trained):
    before, adapted, report = trained
    after = base_weights(adapted)
    assert after.keys() == before.keys()
    for name, weight in before.items():
        assert torch.equal(after[name], weight), name  # frozen: bit-identical, so every zero kept
    assert report["changed_zeros"] == 0


def test_only_the_adapter_trains(trained):
    _, adapted, report = trained
    trainable = {n: p.numel() for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # rank 8 on q_proj (32 -> 32) and v_proj (32 -> 16 with 2 KV heads) of 3 blocks
    hidden, kv = TINY["hidden_size"], TINY["hidden_size"] // 2
    expected = 3 * 8 * ((hidden + hidden) + (hidden + kv))
    assert report["trainable_parameters"] == sum(trainable.values()) == expected


def test_the_loss_falls(trained):
    _, _, report = trained
    losses = [p["loss"] for p in report["curve"] if "loss" in p]
    assert len(losses) == SMALL["steps"]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    heldout = [p["heldout_perplexity"] for p in report["curve"] if "heldout_perplexity" in p]
    assert [p["step"] for p in report["curve"] if "heldout_perplexity" in p] == [0, 10, 20, 30]
    assert heldout[-1] < 0.5 * heldout[0]
    assert report["settings"]["windows_per_step"] == 4 and report["settings"]["accumulation"] == 2
    assert report["tokens"] == 30 * 64


def test_same_seed_same_adapter():
    def adapter_state(seed):
        model = pruned_tiny()
        windows = counting_windows(20, 16)
        adapted, _ = recover(model, RecoveryConfig(**{**SMALL, "steps": 3}), windows, None, seed=seed, progress=False)
        return {n: p.detach().clone() for n, p in adapted.named_parameters() if p.requires_grad}

    first, again, other = adapter_state(0), adapter_state(0), adapter_state(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_merging_applies_the_mask_again():
    model = pruned_tiny()
    windows = counting_windows(20, 16)
    adapted, _ = recover(model, RecoveryConfig(**{**SMALL, "steps": 5}), windows, None, progress=False)
    before = base_weights(adapted)
    deltas = {}
    for i, block in enumerate(decoder_blocks(adapted)):
        for name in ("self_attn.q_proj", "self_attn.v_proj"):
            wrapper = block.get_submodule(name)
            deltas[f"{i}.{name}"] = wrapper.get_delta_weight("default").detach().clone()
    merged = merge_masked(adapted)
    assert not hasattr(merged, "peft_config")
    after = base_weights(merged)
    for name, weight in before.items():
        kept = weight != 0
        assert torch.equal(after[name] != 0, kept), name  # the same zeros
        expected = weight + deltas[name] if name in deltas else weight
        assert torch.allclose(after[name][kept], expected[kept], atol=0, rtol=1e-6), name
        if name in deltas:
            assert deltas[name].abs().min() > 0  # the update is dense: without the mask zeros would fill in


def test_wrapped_linears_keep_their_names(trained):
    _, adapted, _ = trained
    assert linear_names(adapted) == linear_names(make_tiny_model("llama"))


# ----------------------------------------------------------------------------- pipeline, CLI, save
@pytest.mark.integration
def test_cli_round_trip_keeps_perplexity(tmp_path, tiny_model_dir):
    from dlp_lib.cli import main
    from dlp_lib.data import evaluation_windows
    from dlp_lib.evaluation import perplexity
    from dlp_lib.saving import load_saved_model

    record_path, saved = tmp_path / "run.json", tmp_path / "saved"
    args = [
        "--model", str(tiny_model_dir), "--prune_method", "wanda", "--sparsity_ratio", "0.6",
        "--calibration", "wiki-extracts", "--eval", "wiki-extracts",  # another model's default: the hub's
        "--nsamples", "2", "--seqlen", "32", "--eval_windows", "2", "--lora_steps", "3", "--lora_lr", "1e-2",
        "--lora_batch_tokens", "64", "--lora_heldout", "2", "--lora_eval_every", "1",
        "--save", str(record_path), "--save_model", str(saved), "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    record = json.loads(record_path.read_text())
    recovery = record["recovery"]
    assert record["config"]["recovery"]["steps"] == 3
    assert recovery["perplexity"]["before"] == record["perplexity"]["perplexity"]
    assert recovery["perplexity"]["adapter"] != recovery["perplexity"]["before"]
    assert math.isfinite(recovery["perplexity"]["merged"])
    assert recovery["merged_sparsity"] == pytest.approx(record["pruning"]["overall_achieved"], abs=1e-9)
    assert [p["step"] for p in recovery["curve"]] == [0, 1, 2, 3] and recovery["changed_zeros"] == 0
    assert json.loads((saved / "sparsity.json").read_text())["recovery"]["settings"]["rank"] == 8
    assert (saved / "adapter" / "adapter_config.json").is_file()

    model, tokenizer = load_saved_model(saved)
    assert hasattr(model, "peft_config")
    windows = evaluation_windows("wiki-extracts", tokenizer, 32, 2)
    assert perplexity(model, windows, progress=False)["perplexity"] == pytest.approx(
        recovery["perplexity"]["adapter"], rel=1e-6
    )


def test_records_without_recovery_keep_their_hash():
    from dlp_lib.pipeline import RunConfig

    plain = RunConfig(nsamples=2, seqlen=32)
    assert "recovery" not in plain.to_dict()
    with_recovery = RunConfig(nsamples=2, seqlen=32, recovery=RecoveryConfig(steps=2))
    assert with_recovery.to_dict()["recovery"]["steps"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lora_steps", "-1"], "--lora_steps must be >= 0"),
        (["--lora_steps", "2", "--lora_rank", "0"], "rank must be positive"),
        (["--lora_steps", "2", "--lora_lr", "0"], "learning rate (lr) must be > 0"),
        (["--lora_steps", "2", "--prune_method", "dense"], "LoRA recovery needs a pruned model"),
        (["--lora_steps", "2", "--offload"], "drop --offload"),
    ],
)
def test_cli_refuses_bad_recovery_settings(flags, message, capsys):
    from dlp_lib.cli import main

    assert main(["--nsamples", "2", "--seqlen", "32", *flags]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_training_on_the_evaluation_text(text_file, capsys):
    from dlp_lib.cli import main

    flags = ["--eval", str(text_file), "--lora_steps", "2", "--lora_data", str(text_file)]
    assert main(["--nsamples", "2", "--seqlen", "32", *flags]) == 2
    assert "would train on the evaluation text" in capsys.readouterr().err


@pytest.mark.integration
def test_unknown_target_is_refused_before_pruning(tiny_model_dir, capsys, monkeypatch):
    from dlp_lib import pipeline
    from dlp_lib.cli import main

    def no_pruning(*args, **kwargs):
        raise AssertionError("pruned before checking the recovery settings")

    monkeypatch.setattr(pipeline, "prune_model", no_pruning)
    flags = ["--model", str(tiny_model_dir), "--calibration", "wiki-extracts", "--eval", "wiki-extracts"]
    flags += ["--lora_steps", "2", "--lora_targets", "query_key_value"]
    assert main(["--nsamples", "2", "--seqlen", "32", *flags]) == 2
    err = capsys.readouterr().err
    assert "unknown LoRA target module 'query_key_value'" in err and "self_attn.q_proj" in err


def test_training_windows_come_from_the_calibration_side(embedded_tokenizer, text_file):
    from dlp_lib.data import _wiki_streams, check_training_source, tokenizer_fingerprint, training_windows

    calibration, evaluation = _wiki_streams(tokenizer_fingerprint(embedded_tokenizer), embedded_tokenizer)
    windows = training_windows("wiki-extracts", embedded_tokenizer, 64, count=5, cache=False)
    assert torch.equal(windows.flatten(), calibration[: 5 * 64])
    check_training_source("wiki-extracts", "wiki-extracts")  # disjoint articles: allowed
    with pytest.raises(ConfigError, match="evaluation text"):
        check_training_source(f"wikitext2:{text_file}", f"wikitext2:{text_file}")
    check_training_source(str(text_file), "wiki-extracts")


# ------------------------------------------------------------------------------- notebook 08 tables
def _recovery_record(allocation: str, before: float, adapter: float, merged: float) -> dict:
    from dlp_lib import experiments as ex

    prof = ex.profile("smoke")
    config = ex.run_config(prof, "wanda", 0.7, allocation, recovery=True)
    settings = {**config.recovery.to_dict(), "seqlen": 64, "windows_per_step": 2}
    curve = [{"step": 0, "heldout_perplexity": before}, {"step": 1, "loss": 5.0, "lr": 1e-3}]
    curve.append({"step": 2, "loss": 4.0, "lr": 5e-4, "heldout_perplexity": adapter})
    return {
        "config": config.to_dict(),
        "pruning": {"overall_achieved": 0.7, "seconds": {"total": 1.0}},
        "perplexity": {"perplexity": before},
        "recovery": {
            "settings": settings,
            "perplexity": {"before": before, "adapter": adapter, "merged": merged},
            "merged_sparsity": 0.7,
            "curve": curve,
            "tokens": 256,
            "trainable_parameters": 460800,
            "seconds": {"train": 3.0},
            "data": "wiki-extracts",
        },
    }


def test_recovery_table_factor_orderings_and_curves():
    import pandas as pd

    from dlp_lib import experiments as ex, reports

    prof = ex.profile("smoke")
    records = [_recovery_record("dlp", 300.0, 120.0, 130.0), _recovery_record("uniform", 600.0, 150.0, 170.0)]
    tolerance = pd.DataFrame(
        [{"method": "wanda", "allocation": "uniform", "sparsity": 0.7, "tolerance_log": math.log(1.1)}]
    )
    runs = reports.recovery_runs(records, prof, tolerance)
    assert list(runs["allocation"]) == ["uniform", "dlp"]  # profile order
    assert runs["factor"].tolist() == pytest.approx([4.0, 2.5])
    assert runs["tolerance_pct"].tolist() == pytest.approx([10.0, 10.0])
    # adapter: 120 vs 150 is 25% apart, beyond ±10%; merged: 130 vs 170, 31%
    assert reports.recovery_orderings(runs)["wanda"] == "DLP < Uniform by 25% (beyond the ±10% tolerance)"
    close = runs.assign(perplexity_adapter=[150.0, 140.0])
    assert "within the ±10% tolerance" in reports.recovery_orderings(close)["wanda"]
    no_tol = reports.recovery_runs(records, prof)
    assert "no claim" in reports.recovery_orderings(no_tol)["wanda"]
    display = reports.recovery_display(runs)
    assert display["÷"].tolist() == ["4.00", "2.50"]
    assert display["LoRA (merged, masked)"].tolist() == ["170.00", "130.00"]
    curves = reports.recovery_curves(records)
    assert len(curves) == 6 and curves["heldout_perplexity"].notna().sum() == 4
    assert "2 steps of 128 tokens" in reports.recovery_caption(prof, records)


def test_loading_a_recovered_directory_as_a_model_warns_about_the_adapter(tmp_path, caplog, embedded_tokenizer):
    from dlp_lib.models import load_model
    from dlp_lib.saving import save_pruned_model

    model = pruned_tiny()
    windows = counting_windows(12, 16)
    adapted, _ = recover(model, RecoveryConfig(**{**SMALL, "steps": 1}), windows, None, progress=False)
    save_pruned_model(adapted, embedded_tokenizer, tmp_path / "saved")
    with caplog.at_level("WARNING", logger="dlp_lib.models"):
        base, _ = load_model(str(tmp_path / "saved"))
    assert "holds a LoRA adapter" in caplog.text and not hasattr(base, "peft_config")


@pytest.mark.integration
def test_zero_shot_after_recovery_scores_the_adapter_model(tmp_path, tiny_model_dir):
    """The paper profile's path: perplexity, recovery, then lm-eval on the peft model in memory."""
    from dlp_lib.cli import main

    record_path = tmp_path / "run.json"
    args = [
        "--model", str(tiny_model_dir), "--prune_method", "wanda", "--sparsity_ratio", "0.6",
        "--calibration", "wiki-extracts", "--eval", "wiki-extracts",  # another model's default: the hub's
        "--nsamples", "2", "--seqlen", "32", "--eval_windows", "2", "--lora_steps", "2", "--lora_lr", "1e-2",
        "--lora_batch_tokens", "64", "--lora_heldout", "2", "--eval_zero_shot", "--tasks", "rte,openbookqa",
        "--limit", "4", "--zero_shot_batch_size", "4", "--save", str(record_path), "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    record = json.loads(record_path.read_text())
    zero = record["zero_shot"]
    assert zero["model"] == "after LoRA recovery, adapter unmerged"
    assert set(zero["tasks"]) == {"rte", "openbookqa"} and all(e["n"] == 4 for e in zero["tasks"].values())
    assert math.isfinite(record["recovery"]["perplexity"]["merged"])


def test_the_run_log_line_gives_perplexity_before_and_after_recovery():
    from dlp_lib.experiments import headline

    record = _recovery_record("dlp", 300.0, 120.0, 130.0)
    assert headline(record) == "perplexity 300 -> 120 after LoRA recovery"
    assert headline({"perplexity": {"perplexity": 14.61}}) == "perplexity 14.61"
