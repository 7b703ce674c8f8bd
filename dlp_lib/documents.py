"""Text files read as documents, never whole: ``.txt`` (one text), ``.jsonl`` / ``.json`` / ``.json.gz``
(one JSON object with a string ``text`` field per line) and ``.parquet`` (a ``text`` column).

:func:`open_documents` gives a lazy sequence over a file (a .txt in bounded pieces, a .jsonl through an
index of line starts, a .parquet one row group at a time); :func:`probe_text_file` reads a file through
once before any work and refuses what a run would fail on later (bad UTF-8, a line that is not a JSON
object with a string ``text``, a file with no text), naming the file and line.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .config import ConfigError

DOCUMENT_SUFFIXES = (".txt", ".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
FILE_FORMS = "give a .txt/.jsonl file of UTF-8 text, a .json(.gz) or a .parquet"
READ_BYTES = 1 << 20  # a file is read (and probed) this many bytes (characters of a .txt) at a time, never whole
JSON_LINE = "expected one JSON object with a string 'text' field per line"


@contextmanager
def _reading(path: Path):
    """Errors of reading ``path`` as a one-line ConfigError naming it: a file that is not what its name says
    (binary bytes, a broken archive or parquet file) fails wherever it is first read, even midway."""
    try:
        yield
    except ConfigError:
        raise
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason}); {FILE_FORMS}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ConfigError(
            f"{path} is not a readable file of its kind, cut short or damaged ({type(err).__name__}: {err}); copy or "
            "download it again"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    except Exception as err:  # pyarrow's errors on a file that is not parquet
        if type(err).__module__.startswith("pyarrow"):
            raise ConfigError(f"{path} is not a readable parquet file ({' '.join(str(err).split())})") from None
        raise


def _json_kind(value) -> str:
    kinds = ((bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "array"), (dict, "object"))
    return next((name for types, name in kinds if isinstance(value, types)), "null")


def _line_text(where: str, raw: bytes) -> str:
    """The ``text`` of one JSON line; anything else is a ConfigError naming ``where`` (``file:line``)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); {JSON_LINE}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: not JSON ({err}); {JSON_LINE}") from None
    if not isinstance(record, dict):
        got = f"a JSON {_json_kind(record)}"
    elif "text" not in record:
        got = f"an object without 'text' (its keys: {', '.join(map(repr, list(record)[:5])) or 'none'})"
    elif not isinstance(record["text"], str):
        got = f"'text' is a JSON {_json_kind(record['text'])}"
    else:
        return record["text"]
    raise ConfigError(f"{where}: {JSON_LINE}; got {got}")


def _json_lines(path: Path, opener=open) -> Iterator[str]:
    """The ``text`` of each non-blank line of a JSON-lines file, checked as it is read."""
    with _reading(path), opener(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                yield _line_text(f"{path}:{line_no}", raw)


@lru_cache(maxsize=4)
def _line_starts(path: Path, size: int, mtime_ns: int) -> array:
    """Where each non-blank line of a JSON-lines file starts (every line checked on the way); kept per
    version of the file, so the check before the run and the run read it through once each."""
    starts = array("q")
    with _reading(path), open(path, "rb") as f:
        offset = 0
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                _line_text(f"{path}:{line_no}", raw)
                starts.append(offset)
            offset += len(raw)
    return starts


class TextFile(Sequence):
    """A ``.txt`` file: one document, read in blocks (:meth:`blocks`) where a stream is built from it."""

    def __init__(self, path: Path):
        self.path = path

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index):
        if index not in (0, -1):
            raise IndexError(index)
        return "".join(self.blocks())

    def blocks(self) -> Iterator[str]:
        with _reading(self.path), open(self.path, encoding="utf-8") as f:
            while block := f.read(READ_BYTES):
                yield block


class JsonLinesFile(Sequence):
    """A ``.jsonl`` / ``.json`` file: one document per non-blank line, read from the file when asked (only
    where each line starts is kept)."""

    def __init__(self, path: Path):
        self.path = path
        stat = path.stat()
        self._starts = _line_starts(path, stat.st_size, stat.st_mtime_ns)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        with _reading(self.path), open(self.path, "rb") as f:
            f.seek(self._starts[index])
            return _line_text(f"{self.path} (document {index % len(self) + 1})", f.readline())

    def __iter__(self) -> Iterator[str]:
        return _json_lines(self.path)


class ParquetText(Sequence):
    """The ``text`` column of a ``.parquet`` file (a string column without nulls), read in batches where a
    stream is built from it, and whole (as compact Arrow strings) where documents are drawn at random."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        with _reading(path):
            self._file = pq.ParquetFile(path)
        schema = self._file.schema_arrow
        if "text" not in schema.names:
            raise ConfigError(
                f"{path} has no 'text' column (its columns: {', '.join(schema.names[:8])}); give a parquet file "
                "with the text in a string column 'text'"
            )
        kind = schema.field("text").type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"):
            raise ConfigError(f"{path}: column 'text' holds {kind}, not strings; give the text in a string column")
        self._column = None

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def _text(self, value, row: int) -> str:
        if value is None:
            raise ConfigError(f"{self.path}: row {row} of column 'text' is null; give every row a text ('' if none)")
        return value

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._column is None:
            with _reading(self.path):
                self._column = self._file.read(columns=["text"]).column("text")
        return self._text(self._column[index].as_py(), index % len(self))

    def __iter__(self) -> Iterator[str]:
        row = 0
        with _reading(self.path):
            for batch in self._file.iter_batches(batch_size=1024, columns=["text"]):
                for value in batch.column(0).to_pylist():
                    yield self._text(value, row)
                    row += 1

    def null_rows(self) -> int:
        """How many rows of ``text`` are null, as the file's statistics say (0 where it keeps none)."""
        meta = self._file.metadata
        nulls = 0
        for group in range(meta.num_row_groups):
            for i in range(meta.num_columns):
                column = meta.row_group(group).column(i)
                if column.path_in_schema == "text" and column.statistics is not None:
                    nulls += column.statistics.null_count or 0
        return nulls


def open_documents(path: str | Path) -> Sequence[str]:
    """The documents of a local file, read as they are used so that memory does not grow with the file: a
    ``.txt`` is one document (:class:`TextFile`), JSON lines one per line with a string ``text`` field
    (:class:`JsonLinesFile`; every line checked when it is opened), ``.parquet`` its ``text`` column
    (:class:`ParquetText`). A gzipped file is read into a list (gzip cannot seek). A file that is not what its
    name says, or a line that is not what a JSON-lines file holds, is a ConfigError naming it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; {FILE_FORMS} file")
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    name = path.name.lower()
    with _reading(path):
        if name.endswith(".txt"):
            return TextFile(path)
        if name.endswith((".jsonl", ".json")):
            return JsonLinesFile(path)
        if name.endswith((".jsonl.gz", ".json.gz")):
            return list(_json_lines(path, gzip.open))
        if name.endswith(".parquet"):
            return ParquetText(path)
    raise ConfigError(f"unsupported data file {path}: use .txt, .jsonl, .json(.gz) or .parquet")


def read_documents(path: str | Path) -> list[str]:
    """All the documents of a local file (:func:`open_documents`) as a list: one per line of JSON-lines
    (``text`` field), the whole ``.txt``, the ``text`` rows of a ``.parquet``."""
    return list(open_documents(path))


def _check_utf8(path: Path) -> bool:
    """Refuse a file that is not UTF-8 text without NUL bytes, read through in blocks; whether it holds
    anything but white space."""
    decoder, offset, blank = codecs.getincrementaldecoder("utf-8")(), 0, True
    with _reading(path), open(path, "rb") as f:
        while True:
            block, pending = f.read(READ_BYTES), len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                where = f"{err.reason} at byte {offset - pending + err.start}"
                raise ConfigError(f"{path} is not UTF-8 text ({where}); {FILE_FORMS}") from None
            if "\x00" in text:
                raise ConfigError(f"{path} is not UTF-8 text (it holds NUL bytes); {FILE_FORMS}")
            blank = blank and not text.strip()
            offset += len(block)
            if not block:
                return not blank


def probe_text_file(path: str | Path) -> None:
    """Check a local data file before any work, read through once and never held: it is what its suffix
    promises (parquet's magic and a string ``text`` column without nulls; gzip's magic; UTF-8 text without
    NUL bytes) and holds some text, and every line of a JSON-lines file is an object with a string ``text``;
    else a one-line ConfigError naming the file (and the line). A file that passed is not read again while
    it stays the same (a run checks its calibration, evaluation and training sources, often one file)."""
    path = Path(path).expanduser()
    stat = path.stat()
    _probe(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _probe(path: Path, size: int, mtime_ns: int) -> None:
    name = path.name.lower()
    with _reading(path), open(path, "rb") as f:
        head = f.read(4)
    if name.endswith(".parquet"):
        if head != b"PAR1":
            raise ConfigError(f"{path} is not a parquet file; {FILE_FORMS}")
        column = ParquetText(path)
        if column.null_rows():
            raise ConfigError(f"{path}: column 'text' has {column.null_rows()} null rows; give every row a text")
        found = len(column) > 0
    elif name.endswith(".gz"):
        if head[:2] != b"\x1f\x8b":
            raise ConfigError(f"{path} is not a gzip file; {FILE_FORMS}")
        found = sum(1 for _ in _json_lines(path, gzip.open)) > 0
    else:
        found = _check_utf8(path)
        if found and name.endswith((".jsonl", ".json")):
            found = len(JsonLinesFile(path)) > 0
    if not found:
        raise ConfigError(f"{path} holds no text (fewer than one window of tokens); give a file with text")
