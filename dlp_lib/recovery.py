"""LoRA recovery of a pruned model, its sparsity kept (Wanda's and OWL's ``lora_ft`` step).

A LoRA adapter (peft) is attached to some decoder linears of the pruned in-memory model and trained on a
token stream that no evaluation window comes from; the sparse base stays frozen, so every pruned weight is
still exactly zero afterwards (checked). Two models come out, both evaluated by the pipeline:

- the **adapter model** (base + unmerged adapter): the number the papers report;
- the **merged model**: ``W + ΔW`` with the pruning mask applied again (``ΔW = B·A·α/r`` is dense), a
  plain sparse model that ``from_pretrained`` loads without peft (:func:`merge_masked`).

The papers' recipe (Wanda ``lora_ft/finetune_lm.py``): LoRA on ``q_proj`` and ``v_proj``, rank 8,
alpha 16, dropout 0.05, AdamW with learning rate 1e-4, no weight decay, 5 warm-up steps then linear decay,
gradient clipping at 1.0, fp16, 128 sequences of 1024 tokens per optimizer step (gradient accumulation),
30,000 C4 training sequences (234 steps; about 12 hours for LLaMA-7B on one GPU), 128 held-out
sequences evaluated every 10 steps. :class:`RecoveryConfig`'s defaults are that recipe.

Example::

    from dlp_lib.recovery import RecoveryConfig, recover, merge_masked
    config = RecoveryConfig(steps=20, lr=2e-3, batch_tokens=1024, seqlen=256, micro_batch=4)
    adapted, report = recover(model, config, train_windows, heldout_windows)
    ...  # evaluate ``adapted`` (the papers' number), save it with saving.save_pruned_model
    merged = merge_masked(adapted)  # plain sparse model, same zeros as before training
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import time
import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import ConfigError, check_int, check_number
from .evaluation import perplexity
from .layers import decoder_blocks, linear_sublayers

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PAPER_TARGETS = ("q_proj", "v_proj")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class RecoveryConfig:
    """LoRA recovery settings; the defaults are the papers' recipe (see the module docstring).

    ``steps`` counts optimizer steps of ``batch_tokens`` tokens each (``batch_tokens / seqlen`` windows,
    ``micro_batch`` windows per forward, the rest by gradient accumulation). ``data=None`` trains on the
    run's calibration source (its calibration side for the embedded Wikipedia data; never the evaluation
    text). ``seqlen=None`` and ``seed=None`` take the run's (the papers trained on 1024-token windows).
    ``gradient_checkpointing=None`` and ``precision="auto"`` mean: on CUDA, checkpointing and mixed precision
    (the base's fp16/bf16, else bf16 where supported); on CPU, neither (fp32).
    """

    steps: int = 234
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    lr: float = 1e-4
    warmup_steps: int = 5
    batch_tokens: int = 128 * 1024
    seqlen: int | None = None
    micro_batch: int = 1
    targets: tuple[str, ...] = PAPER_TARGETS
    data: str | None = None
    heldout_windows: int = 128
    eval_every: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool | None = None
    precision: str = "auto"
    seed: int | None = None

    def __post_init__(self):
        targets = self.targets
        if isinstance(targets, str):
            targets = targets.split(",")
        targets = tuple(t.strip() for t in targets)
        object.__setattr__(self, "targets", targets)
        if not targets or any(not t for t in targets):
            raise ConfigError(f"give at least one LoRA target module (e.g. q_proj,v_proj); got {self.targets!r}")
        check_int("recovery steps", self.steps, 0)
        check_int("LoRA rank", self.rank, 1)
        check_number("LoRA alpha", self.alpha, 0.0, open_low=True)
        check_number("LoRA dropout", self.dropout, 0.0, 1.0, open_high=True)
        check_number("the LoRA learning rate (lr)", self.lr, 0.0, open_low=True)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("batch_tokens", self.batch_tokens, 2)
        check_int("micro_batch", self.micro_batch, 1, hint=" (windows per forward)")
        check_int("heldout_windows", self.heldout_windows, 0)
        check_int("eval_every", self.eval_every, 0, hint=" (0: only before and after)")
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("max_grad_norm", self.max_grad_norm, 0.0, hint=" (0: no clipping)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.seqlen is not None:
            check_int("the training window length (seqlen)", self.seqlen, 2)
        if self.seed is not None:
            check_int("the recovery seed", self.seed, 0)
        if self.seqlen is not None:
            self.windows_per_step(self.seqlen)

    def windows_per_step(self, seqlen: int) -> int:
        """Training windows per optimizer step; ``batch_tokens`` must be a multiple of the window length."""
        if self.batch_tokens < seqlen or self.batch_tokens % seqlen:
            raise ConfigError(
                f"batch_tokens ({self.batch_tokens}) must be a positive multiple of the training window length "
                f"({seqlen}), e.g. {max(1, self.batch_tokens // seqlen) * seqlen}"
            )
        return self.batch_tokens // seqlen

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d


# ------------------------------------------------------------------------------------------ targets
def linear_names(model) -> list[str]:
    """The distinct names of the decoder blocks' linears (``self_attn.q_proj``, ``mlp.down_proj``, ...)."""
    names = []
    for block in decoder_blocks(model):
        for name in linear_sublayers(block):
            if name not in names:
                names.append(name)
    return names


def resolve_targets(model, targets) -> list[str]:
    """peft ``target_modules`` for ``targets``: each a decoder-linear name or its last part
    (``q_proj`` or ``self_attn.q_proj``), or ``all`` for every decoder linear. An unknown name is a
    ConfigError that lists the model's linear names."""
    names = linear_names(model)
    if list(targets) == ["all"]:
        return sorted({n.split(".")[-1] for n in names})
    for target in targets:  # peft matches a target against the end of each module's name
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ConfigError(
                f"unknown LoRA target module {target!r} for this {model.config.model_type} model; its decoder "
                f"linears are {', '.join(names)} (give last parts such as q_proj, or 'all')"
            )
    return list(targets)


def check_recovery(model, config: RecoveryConfig, seqlen: int) -> None:
    """Model-dependent checks, before any training: target names, window length within the model's
    positions, a batch that is a whole number of windows, a precision the device can train in."""
    if importlib.util.find_spec("peft") is None:
        raise ConfigError("LoRA recovery needs the peft package: pip install peft (or make venv)")
    targets = resolve_targets(model, config.targets)
    widths = [
        min(linear.in_features, linear.out_features)
        for block in decoder_blocks(model)
        for name, linear in linear_sublayers(block).items()
        if any(name == t or name.endswith("." + t) for t in targets)
    ]
    if widths and config.rank > min(widths):  # a rank beyond the narrowest side adds nothing but memory
        raise ConfigError(
            f"LoRA rank {config.rank} exceeds the narrowest side of the targeted linears ({min(widths)}); "
            f"use --lora_rank {min(widths)} or less (the papers: 8)"
        )
    embeddings = model.get_input_embeddings().weight
    resolve_precision(config.precision, embeddings.device, embeddings.dtype)
    config.windows_per_step(seqlen)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and seqlen > positions:
        raise ConfigError(
            f"the recovery's training windows ({seqlen} tokens) are longer than the model's {positions} positions; "
            "use a shorter --lora_seqlen"
        )


# ------------------------------------------------------------------------------------------ helpers
def resolve_precision(precision: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """``auto`` on CUDA: the base's half precision if it has one (fp16 weights train in fp16 with a
    gradient scaler, as the papers did), else bf16 where supported, else fp16; fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        if dtype in (torch.float16, torch.bfloat16):
            return "fp16" if dtype == torch.float16 else "bf16"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 training needs a CUDA device (it relies on a gradient scaler); use fp32 or bf16")
    return precision


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """transformers' ``linear`` schedule: rises linearly over ``warmup`` steps, then falls linearly to 0
    at ``total`` (step counts from 0, the factor applies to that step's update)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def base_state(model) -> list[tuple[int, float]]:
    """Per decoder linear (its base weight when an adapter is attached): the count of exact zeros and
    the float64 sum, cheap evidence that a frozen base did not move."""
    with torch.no_grad():
        return [
            (int((linear.weight == 0).sum()), float(linear.weight.double().sum()))
            for block in decoder_blocks(model)
            for linear in linear_sublayers(block).values()
        ]


def heldout_perplexity(model, windows: torch.Tensor, batch_size: int) -> float:
    """``evaluation.perplexity`` of ``model`` on the held-out windows, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        return perplexity(model, windows, batch_size, progress=False)["perplexity"]
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------- training
def recover(
    model,
    config: RecoveryConfig,
    train_windows: torch.Tensor,
    heldout_windows: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
):
    """Train a LoRA adapter on ``train_windows`` (``N x seqlen`` token ids) with the sparse base frozen.

    Returns ``(adapted, report)``: ``adapted`` is the peft model (base + unmerged adapter), in eval mode;
    ``report`` holds the resolved settings, trainable/total parameters, the curve (per step: loss and
    learning rate; every ``eval_every`` steps and at both ends: held-out perplexity), tokens, seconds,
    and ``changed_zeros`` (weights of the base that left or became zero: always 0, checked).
    """
    from peft import LoraConfig, get_peft_model

    seqlen = train_windows.shape[1]
    check_recovery(model, config, seqlen)
    per_step = config.windows_per_step(seqlen)
    micro = min(config.micro_batch, per_step)
    embeddings = model.get_input_embeddings().weight
    device = embeddings.device
    precision = resolve_precision(config.precision, device, embeddings.dtype)
    checkpointing = device.type == "cuda" if config.gradient_checkpointing is None else config.gradient_checkpointing
    targets = resolve_targets(model, config.targets)
    before = base_state(model)

    torch.manual_seed(seed)  # the adapter's initialisation and dropout
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        adapted = get_peft_model(model, lora)
    if checkpointing:
        adapted.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = trainable_parameters(adapted)
    params = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate_factor(s, config.warmup_steps, config.steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    order = _window_order(train_windows.shape[0], per_step * config.steps, seed)
    evaluate = heldout_windows is not None and heldout_windows.shape[0] > 0

    curve = []
    start = time.perf_counter()
    eval_seconds = 0.0
    if evaluate:
        t = time.perf_counter()
        curve.append({"step": 0, "heldout_perplexity": heldout_perplexity(adapted, heldout_windows, micro)})
        eval_seconds += time.perf_counter() - t
    adapted.train()
    bar = tqdm(range(config.steps), desc="LoRA recovery", unit="step", disable=not progress)
    for step in bar:
        indices = order[step * per_step : (step + 1) * per_step]
        lr = optimizer.param_groups[0]["lr"]
        step_loss = 0.0
        for chunk in indices.split(micro):
            batch = train_windows[chunk].to(device)
            with _autocast(precision, device):
                loss = adapted(input_ids=batch, labels=batch, use_cache=False).loss
            weight = batch.shape[0] / per_step  # equal-length windows: the step's mean token loss
            scaler.scale(loss * weight).backward()
            step_loss += float(loss.detach()) * weight
        if config.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        point = {"step": step + 1, "loss": step_loss, "lr": lr}
        periodic = config.eval_every and (step + 1) % config.eval_every == 0
        if evaluate and (periodic or step + 1 == config.steps):
            t = time.perf_counter()
            point["heldout_perplexity"] = heldout_perplexity(adapted, heldout_windows, micro)
            eval_seconds += time.perf_counter() - t
        curve.append(point)
        bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
    if checkpointing:
        adapted.get_base_model().gradient_checkpointing_disable()
    adapted.eval()
    seconds = time.perf_counter() - start

    after = base_state(adapted)
    changed = sum(abs(a[0] - b[0]) for a, b in zip(after, before))
    if changed or after != before:
        raise RuntimeError(f"LoRA recovery changed the frozen sparse base ({changed} zeros moved); this is a bug")
    report = {
        "settings": {
            **config.to_dict(),
            "seqlen": seqlen,
            "seed": seed,
            "targets_resolved": targets,
            "windows_per_step": per_step,
            "micro_batch": micro,
            "accumulation": math.ceil(per_step / micro),
            "precision": precision,
            "gradient_checkpointing": checkpointing,
        },
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_windows": int(train_windows.shape[0]),
        "heldout_windows": int(heldout_windows.shape[0]) if evaluate else 0,
        "epochs": per_step * config.steps / train_windows.shape[0],
        "tokens": per_step * config.steps * seqlen,
        "curve": curve,
        "changed_zeros": changed,
        "seconds": {"train": seconds - eval_seconds, "heldout_eval": eval_seconds},
    }
    return adapted, report


def _window_order(available: int, needed: int, seed: int) -> torch.Tensor:
    """``needed`` window indices: seeded permutations of ``range(available)``, one epoch after another."""
    generator = torch.Generator().manual_seed(seed)
    epochs = max(1, math.ceil(needed / available))
    if epochs > 1:
        log.info("LoRA recovery: %d training windows for %d window visits, %d epochs", available, needed, epochs)
    return torch.cat([torch.randperm(available, generator=generator) for _ in range(epochs)])[:needed]


@torch.no_grad()
def merge_masked(adapted):
    """Fold the adapter into the base and zero again every weight the pruning removed; return the
    plain transformers model (the peft wrappers are gone). ``W ← (W + ΔW) ⊙ [W ≠ 0]``."""
    from peft.tuners.lora import LoraLayer

    for module in adapted.modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight(ADAPTER_NAME).to(weight.dtype)
            weight.copy_(torch.where(weight != 0, weight + delta, torch.zeros_like(weight)))
    return adapted.unload()
