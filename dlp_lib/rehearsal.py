"""The paper protocol, rehearsed offline: local stand-ins for everything the ``paper`` profile downloads.

The ``rehearsal`` profile (:mod:`dlp_lib.experiments`) runs the ``paper`` profile's protocol with every
list kept and only the counts cut. What it reads is built here, once, by::

    python -m dlp_lib.rehearsal                 # into $DLP_REHEARSAL_DIR or <dlp_lib cache>/rehearsal
    make rehearsal-assets                       # the same

from the embedded texts, in the hub sources' own formats, so that the exact loaders of ``paper`` run on
them (their local forms):

- ``c4/en/c4-train.00000-of-01024.json.gz``: C4's first English train shard as the hub serves it, one
  JSON object per line with ``text``, ``timestamp`` and ``url``. Documents are runs of the embedded
  Wikipedia extracts (calibration side), most of them long enough for 2048-token windows and some
  shorter, so the papers' sampler also rejects documents as it does on C4. Read as ``c4:<file>``.
- ``wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet``: WikiText-2's raw test split, one ``text``
  row per line in WikiText's markup (`` = Title = ``, paragraphs, blank rows), from the evaluation side
  of the extracts. Read as ``wikitext2:<file>``.
- ``zero-shot/<hub dataset>/<config>/<split>-00000-of-00001.parquet``: the first rows of each of the
  seven tasks' scored split in the hub datasets' own schemas (``aps/super_glue/boolq/validation-...``),
  from the shipped task data. Read by lm-eval's stock task configs with only the data files replaced:
  the zero-shot source ``hub:<directory>`` (:mod:`dlp_lib.zeroshot`).
- ``tiny-llama/``: a randomly initialised LLaMA (6 blocks of width 64) with a 4096-token BPE tokenizer
  trained on the extracts (it adds BOS, as LLaMA's does), saved as hub checkpoints are: fp16
  safetensors, ``config.json``, tokenizer files.

Each file is written atomically; an existing complete set is kept (``force=True`` rebuilds it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
from pathlib import Path

from .cache import atomic_path, cache_root, check_writable
from .config import ConfigError
from .zeroshot import PAPER_TASKS, build_task_files, hub_file

log = logging.getLogger("dlp_lib.rehearsal")

DIR_ENV = "DLP_REHEARSAL_DIR"
C4_FILE = "c4/en/c4-train.00000-of-01024.json.gz"
WIKITEXT2_FILE = "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"
ZERO_SHOT_DIR = "zero-shot"
MODEL_DIR = "tiny-llama"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

TASK_ROWS = 32  # rows per task: the rehearsal scores a few of them

# a LLaMA-2 block at width 64: every linear's input a multiple of 8 (2:4 and 4:8), 4096 positions
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
C4_DOCUMENT_CHARS = 12_000  # ~3,000 tokens: above a 2048-token window, as the C4 documents the sampler keeps
C4_DOCUMENTS = 120  # long documents; as many short ones (single extracts) are interleaved
WIKITEXT2_CHARS = 14_000  # ~2 windows of 2048 tokens: the "whole split" stays seconds long on a CPU
TOKENIZER_VOCAB = 4096


def assets_dir() -> Path:
    """Where the rehearsal's files live: ``$DLP_REHEARSAL_DIR``, else ``<dlp_lib cache>/rehearsal``."""
    configured = os.environ.get(DIR_ENV)
    return Path(configured).expanduser() if configured else cache_root() / "rehearsal"


def paths(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """The rehearsal files by role: ``model``, ``c4``, ``wikitext2``, ``zero_shot``."""
    root = Path(directory).expanduser() if directory is not None else assets_dir()
    return {
        "model": root / MODEL_DIR,
        "c4": root / C4_FILE,
        "wikitext2": root / WIKITEXT2_FILE,
        "zero_shot": root / ZERO_SHOT_DIR,
    }


def is_built(directory: str | os.PathLike | None = None) -> bool:
    """Whether ``directory`` holds a complete set of this version's files (the manifest says complete
    only once every file is written)."""
    root = Path(directory).expanduser() if directory is not None else assets_dir()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    found = paths(root)
    return (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT_VERSION
        and manifest.get("complete", True)
        and (found["model"] / "config.json").is_file()
        and found["c4"].is_file()
        and found["wikitext2"].is_file()
        and all(hub_file(found["zero_shot"], task).is_file() for task in PAPER_TASKS)
    )


def require_built(directory: str | os.PathLike | None = None) -> Path:
    """The assets directory, or a ConfigError saying how to build it."""
    root = check_assets_place(directory)
    if not is_built(root):
        raise ConfigError(
            f"the rehearsal's local data and model are not built in {root}; run `make rehearsal-assets` "
            f"(python -m dlp_lib.rehearsal), or point {DIR_ENV} at a directory that holds them"
        )
    return root


# ------------------------------------------------------------------------------------------- the text
def c4_documents() -> list[str]:
    """Long documents (runs of calibration-side extracts) interleaved with short ones (single extracts)."""
    from .data import wiki_extracts_parts

    extracts = wiki_extracts_parts()[0]
    documents, current, index = [], [], 0
    while len(documents) < 2 * C4_DOCUMENTS and index < len(extracts):
        current.append(extracts[index])
        index += 1
        if sum(map(len, current)) >= C4_DOCUMENT_CHARS:
            documents.append("\n".join(current))
            documents.append(extracts[index])  # a short document, which the sampler rejects
            current, index = [], index + 1
    return documents


def wikitext2_rows() -> list[str]:
    """WikiText-2 raw rows (its markup: a blank row, `` = Title = ``, a blank row, then paragraphs, each
    row ending in a newline) from evaluation-side extracts, about WIKITEXT2_CHARS characters."""
    from .data import wiki_extracts_file

    articles = sorted(json.loads(wiki_extracts_file().read_text()).values(), key=lambda a: a["title"])
    rows, size = [], 0
    for article in articles[::4]:  # the evaluation side (data.wiki_extracts_parts)
        rows += ["", f" = {article['title']} = \n", ""]
        for paragraph in article["extract"].split("\n"):
            if paragraph.strip():
                rows.append(f" {paragraph.strip()} \n")
        size += len(article["extract"])
        if size >= WIKITEXT2_CHARS:
            break
    return rows


# ---------------------------------------------------------------------------------------- the writers
def write_c4(path: Path) -> None:
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for i, text in enumerate(c4_documents()):
            row = {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://rehearsal.invalid/{i}"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_wikitext2(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"text": wikitext2_rows()}), tmp)


def write_zero_shot(directory: Path, rows: int = TASK_ROWS) -> None:
    """The first ``rows`` rows of each task's scored split, in the hub dataset's schema (the shipped data
    converted by :func:`dlp_lib.zeroshot.build_task_files` is in those schemas already)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    converted = build_task_files()
    manifest = json.loads((converted / "manifest.json").read_text())
    for task in PAPER_TASKS:
        with open(converted / manifest["tasks"][task]["file"], encoding="utf-8") as f:
            table = [json.loads(line) for _, line in zip(range(rows), f)]
        with atomic_path(hub_file(directory, task)) as tmp:
            pq.write_table(pa.Table.from_pylist(table), tmp)


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB):
    """A byte-level BPE tokenizer of ``vocab_size`` trained on the embedded extracts' calibration side,
    which adds BOS as LLaMA's does (``<s>``, id 1; ``</s>`` 2; ``<unk>`` 0). A small vocabulary keeps the
    tiny model's output layer (and so every evaluation) cheap on a CPU."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from .data import wiki_extracts_parts

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(wiki_extracts_parts()[0], trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=int(1e30)
    )


def write_model(directory: Path, shape: dict | None = None, seed: int = 0, tokenizer=None) -> None:
    """A random LLaMA of ``shape`` (default TINY_LLAMA), saved in fp16 with ``tokenizer`` (default:
    :func:`train_tokenizer`'s)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or train_tokenizer()
    config = LlamaConfig(
        **(shape or TINY_LLAMA),
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="float16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float16).eval()
    with atomic_path(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def build_assets(directory: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write every rehearsal file into ``directory`` (default :func:`assets_dir`) unless a complete set is
    there; return the directory."""
    root = check_assets_place(directory)
    if is_built(root) and not force:
        return root
    found = paths(root)
    foreign = [path.name for path in found.values() if path.exists()] if not (root / MANIFEST).is_file() else []
    if foreign:
        raise ConfigError(
            f"{root} already holds {', '.join(foreign)}, not written by the rehearsal (no {MANIFEST}); "
            f"give an empty directory (or set {DIR_ENV} to one) rather than replace them"
        )
    check_writable(root / MANIFEST, "the rehearsal's files")
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, found, complete=False)  # claims the files being written; complete only at the end
    for name, write in (
        ("c4", write_c4),
        ("wikitext2", write_wikitext2),
        ("zero_shot", write_zero_shot),
        ("model", write_model),
    ):
        log.info("writing the rehearsal's %s into %s", name, found[name])
        write(found[name])
    write_manifest(root, found, complete=True)
    return root


def write_manifest(root: Path, found: dict[str, Path], complete: bool) -> None:
    """The manifest: which files the rehearsal wrote here (so a rebuild may replace them and nothing
    else) and whether the set is complete."""
    files = {name: str(path.relative_to(root)) for name, path in found.items()}
    manifest = {"format": FORMAT_VERSION, "complete": complete, "files": files}
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


def check_assets_place(directory: str | os.PathLike | None = None) -> Path:
    """The assets directory (``directory`` or :func:`assets_dir`), after checking it is not a file."""
    root = Path(directory).expanduser() if directory is not None else assets_dir()
    if root.exists() and not root.is_dir():
        where = "the directory given" if directory is not None else DIR_ENV
        raise ConfigError(f"the rehearsal's folder {root} is a file; point {where} at a directory")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlp_lib.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default=None, help=f"where to write (default: ${DIR_ENV} or the cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete set is there")
    args = parser.parse_args(argv)
    from .log import setup_logging

    setup_logging()
    try:
        root = build_assets(args.directory, force=args.force)
    except ConfigError as err:
        print(f"{parser.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"rehearsal data and model in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
