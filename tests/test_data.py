"""Text sources and token windows (docs/methods.md, "Calibration and evaluation data"): the C4 sampler, the
WikiText-2 windows, local files, the on-disk cache, the embedded wiki-extracts split and the parity windows.
Which source a run reads when none is given: tests/test_data_defaults.py."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch

from dlp_lib import data
from dlp_lib.config import ConfigError
from dlp_lib.data import (
    calibration_windows,
    evaluation_windows,
    read_documents,
    sample_document_windows,
    wiki_extracts_parts,
)

PARITY = Path(__file__).resolve().parent / "fixtures" / "parity"
SEQLEN = 32
WORDS = (
    "river stone garden window paper silver market winter orange castle music forest engine bridge "
    "planet letter mirror candle harbor valley"
).split()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache directory (windows are built, never read from ~/.cache)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DLP_CACHE_DIR", str(cache))
    return cache


def _ids(tokenizer, text):
    return tokenizer(text).input_ids


def _words(seed, count):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _exact_document(tokenizer, seqlen):
    """A document of exactly ``seqlen`` tokens, in words that no other document uses."""
    text = "zebra"
    while len(_ids(tokenizer, text)) < seqlen:
        text += " zebra"
    assert len(_ids(tokenizer, text)) == seqlen, "could not build a document of exactly seqlen tokens"
    return text


class _CountingTokenizer:
    """Wraps a tokenizer and records every text it was asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.texts = []

    def __call__(self, text, **kwargs):
        self.texts.append(text)
        return self.tokenizer(text, **kwargs)


@pytest.fixture
def c4_documents(embedded_tokenizer):
    long_docs = [_words(seed, 90) for seed in range(3)]  # about 90 tokens each, > SEQLEN
    short_docs = [_words(100 + seed, 10) for seed in range(4)]  # < SEQLEN
    exact = _exact_document(embedded_tokenizer, SEQLEN)
    docs = [short_docs[0], long_docs[0], exact, short_docs[1], long_docs[1], short_docs[2], exact, long_docs[2]]
    docs.append(short_docs[3])
    for doc in long_docs:
        assert len(_ids(embedded_tokenizer, doc)) > SEQLEN + 10
    for doc in short_docs:
        assert len(_ids(embedded_tokenizer, doc)) < SEQLEN
    return docs, long_docs, exact


def _write_c4_shard(path, documents):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(documents):
            record = {
                "text": text,
                "timestamp": f"2019-04-{i % 28 + 1:02d}T10:00:00Z",
                "url": f"https://example.org/{i}",
            }
            f.write(json.dumps(record) + "\n")
    return path


def _slice_of(window: torch.Tensor, ids: list[int]) -> bool:
    doc = torch.tensor(ids)
    if doc.numel() < window.numel():
        return False
    return bool((doc.unfold(0, window.numel(), 1) == window).all(dim=1).any())


# ------------------------------------------------------------------------------ C4 sampler
def test_c4_sampler_takes_windows_only_from_documents_longer_than_seqlen(c4_documents, embedded_tokenizer):
    docs, long_docs, exact = c4_documents
    counting = _CountingTokenizer(embedded_tokenizer)
    windows = sample_document_windows(docs, counting, nsamples=24, seqlen=SEQLEN, seed=0)
    assert windows.shape == (24, SEQLEN) and windows.dtype == torch.long
    assert exact in counting.texts, "the exactly-seqlen document was never drawn: the test proves nothing"
    long_ids = [_ids(embedded_tokenizer, d) for d in long_docs]
    exact_ids = _ids(embedded_tokenizer, exact)
    zebra = set(exact_ids)
    for window in windows:
        assert any(_slice_of(window, ids) for ids in long_ids)
        assert window.tolist() != exact_ids
        assert not set(window.tolist()) <= zebra
    # several start positions are used (windows are not always the document start)
    assert len({tuple(w.tolist()) for w in windows}) > 3


def test_c4_sampler_is_seeded(c4_documents, embedded_tokenizer):
    docs, _, _ = c4_documents
    a = sample_document_windows(docs, embedded_tokenizer, nsamples=8, seqlen=SEQLEN, seed=0)
    b = sample_document_windows(docs, embedded_tokenizer, nsamples=8, seqlen=SEQLEN, seed=0)
    c = sample_document_windows(docs, embedded_tokenizer, nsamples=8, seqlen=SEQLEN, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_c4_sampler_follows_python_random_recipe(c4_documents, embedded_tokenizer):
    """randint(0, len-1) for the document, redraw unless longer than seqlen, randint(0, n-seqlen-1) start."""
    docs, _, _ = c4_documents
    rng = random.Random(5)
    expected = []
    for _ in range(6):
        while True:
            ids = _ids(embedded_tokenizer, docs[rng.randint(0, len(docs) - 1)])
            if len(ids) > SEQLEN:
                break
        start = rng.randint(0, len(ids) - SEQLEN - 1)
        expected.append(ids[start : start + SEQLEN])
    windows = sample_document_windows(docs, embedded_tokenizer, nsamples=6, seqlen=SEQLEN, seed=5)
    assert windows.tolist() == expected


def test_c4_sampler_without_long_documents_raises(c4_documents, embedded_tokenizer, tmp_path):
    docs, _, exact = c4_documents
    short = [d for d in docs if len(_ids(embedded_tokenizer, d)) <= SEQLEN]
    assert exact in short
    with pytest.raises(ConfigError, match=f"longer than {SEQLEN}"):
        sample_document_windows(short, embedded_tokenizer, nsamples=2, seqlen=SEQLEN, seed=0, max_draws=50)
    with pytest.raises(ConfigError):
        sample_document_windows([], embedded_tokenizer, nsamples=2, seqlen=SEQLEN, seed=0)
    # through the public entry point with the default number of draws: an error, not an endless loop
    path = _write_c4_shard(tmp_path / "short.json.gz", short)
    with pytest.raises(ConfigError, match="longer than"):
        calibration_windows(f"c4:{path}", embedded_tokenizer, nsamples=2, seqlen=SEQLEN)


def test_calibration_windows_read_a_local_c4_shard(c4_documents, embedded_tokenizer, tmp_path):
    docs, long_docs, _ = c4_documents
    path = _write_c4_shard(tmp_path / "c4-train.00000-of-01024.json.gz", docs)
    assert read_documents(path) == docs
    windows = calibration_windows(f"c4:{path}", embedded_tokenizer, nsamples=6, seqlen=SEQLEN, seed=2)
    expected = sample_document_windows(docs, embedded_tokenizer, nsamples=6, seqlen=SEQLEN, seed=2)
    assert torch.equal(windows, expected)
    long_ids = [_ids(embedded_tokenizer, d) for d in long_docs]
    assert all(any(_slice_of(w, ids) for ids in long_ids) for w in windows)
    with pytest.raises(ConfigError, match="calibration"):
        evaluation_windows(f"c4:{path}", embedded_tokenizer, SEQLEN)


# ------------------------------------------------------------------------------ WikiText-2
WIKITEXT_ROWS = [
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game developed by Sega . \n",
    " The game began development in 2010 , carrying over a large portion of the work done on its predecessor . \n",
    "",
    " = = Gameplay = = \n",
    "",
    " As with previous games , the player controls a squad of soldiers in turn @-@ based battles , moving units "
    "across a map of the battlefield while the enemy waits . \n",
    " The game 's battle system , the BliTZ system , is carried over directly from the first game . \n",
    "",
    " = = Plot = = \n",
    " The story follows the Nameless , a penal military unit serving the nation of Gallia during the war . \n",
    "",
]


@pytest.fixture
def wikitext_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": WIKITEXT_ROWS}), path)
    return path


def test_wikitext2_windows_from_local_parquet(wikitext_parquet, embedded_tokenizer):
    ids = _ids(embedded_tokenizer, "\n\n".join(WIKITEXT_ROWS))
    assert len(ids) % SEQLEN != 0 and len(ids) // SEQLEN >= 3, "fixture must leave a remainder to drop"
    windows = evaluation_windows(f"wikitext2:{wikitext_parquet}", embedded_tokenizer, SEQLEN, None)
    n = len(ids) // SEQLEN
    assert windows.shape == (n, SEQLEN) and windows.dtype == torch.long
    assert windows.flatten().tolist() == ids[: n * SEQLEN]
    for i in range(n):  # non-overlapping, in order
        assert windows[i].tolist() == ids[i * SEQLEN : (i + 1) * SEQLEN]
    first_two = evaluation_windows(f"wikitext2:{wikitext_parquet}", embedded_tokenizer, SEQLEN, 2)
    assert torch.equal(first_two, windows[:2])
    with pytest.raises(ConfigError, match=f"{n + 1} evaluation windows"):
        evaluation_windows(f"wikitext2:{wikitext_parquet}", embedded_tokenizer, SEQLEN, n + 1)
    with pytest.raises(ConfigError):
        evaluation_windows(f"wikitext2:{wikitext_parquet}", embedded_tokenizer, len(ids) + 1, None)


def test_wikitext2_parquet_keeps_empty_rows(wikitext_parquet):
    assert read_documents(wikitext_parquet) == WIKITEXT_ROWS


# ------------------------------------------------------------------------------ local files
def test_local_txt_source(text_file, embedded_tokenizer):
    text = Path(text_file).read_text()
    ids = _ids(embedded_tokenizer, text)
    windows = evaluation_windows(str(text_file), embedded_tokenizer, 256, 3)
    assert windows.tolist() == [ids[i * 256 : (i + 1) * 256] for i in range(3)]
    calibration = calibration_windows(str(text_file), embedded_tokenizer, nsamples=4, seqlen=64, seed=0)
    assert calibration.shape == (4, 64)
    assert all(_slice_of(w, ids) for w in calibration)
    again = calibration_windows(str(text_file), embedded_tokenizer, nsamples=4, seqlen=64, seed=0, cache=False)
    other = calibration_windows(str(text_file), embedded_tokenizer, nsamples=4, seqlen=64, seed=1, cache=False)
    assert torch.equal(calibration, again)
    assert not torch.equal(calibration, other)


def test_local_jsonl_source(c4_documents, embedded_tokenizer, tmp_path):
    docs, long_docs, _ = c4_documents
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    assert read_documents(path) == docs
    ids = _ids(embedded_tokenizer, "\n\n".join(docs))
    windows = evaluation_windows(str(path), embedded_tokenizer, SEQLEN, None)
    assert windows.shape[0] == len(ids) // SEQLEN
    assert windows.flatten().tolist() == ids[: windows.numel()]
    calibration = calibration_windows(str(path), embedded_tokenizer, nsamples=5, seqlen=SEQLEN, seed=3)
    expected = sample_document_windows(docs, embedded_tokenizer, nsamples=5, seqlen=SEQLEN, seed=3)
    assert torch.equal(calibration, expected)


def test_read_documents_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_documents(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": broken}\n{"text": "five"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:4:"):
        read_documents(bad)
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(ConfigError, match=r"no_text\.jsonl:2:.*'text'"):
        read_documents(no_text)
    csv = tmp_path / "data.csv"
    csv.write_text("text\nhello\n")
    with pytest.raises(ConfigError, match="unsupported"):
        read_documents(csv)
    gz = tmp_path / "docs.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write('{"text": "a"}\n{"text": "b"}\n')
    assert read_documents(gz) == ["a", "b"]


def test_unknown_source_raises(embedded_tokenizer, tmp_path):
    for source in ("no-such-source", str(tmp_path / "missing.txt"), "wikitext103"):
        with pytest.raises(ConfigError, match="unknown data source"):
            calibration_windows(source, embedded_tokenizer, nsamples=2, seqlen=SEQLEN)
        with pytest.raises(ConfigError, match="unknown data source"):
            evaluation_windows(source, embedded_tokenizer, SEQLEN)
    with pytest.raises(ConfigError):
        data.check_source(f"c4:{tmp_path / 'missing.json.gz'}")


def test_bad_window_arguments_raise(text_file, embedded_tokenizer):
    with pytest.raises(ConfigError):
        calibration_windows(str(text_file), embedded_tokenizer, nsamples=0, seqlen=SEQLEN)
    with pytest.raises(ConfigError):
        calibration_windows(str(text_file), embedded_tokenizer, nsamples=2, seqlen=1)
    with pytest.raises(ConfigError):
        evaluation_windows(str(text_file), embedded_tokenizer, SEQLEN, 0)


# ------------------------------------------------------------------------------ on-disk cache
def test_window_cache_returns_identical_tensors_and_tracks_file_content(
    embedded_tokenizer, tmp_path, private_cache, monkeypatch
):
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(_words(7, 400).split()))
    first = calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=SEQLEN, seed=0)
    files = list((private_cache / "windows").glob("*.pt"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    with monkeypatch.context() as m:
        m.setattr(data, "_build_calibration", fail)
        second = calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=SEQLEN, seed=0)
    assert torch.equal(first, second) and second.dtype == torch.long

    # another seed, window length or count is another entry
    calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=SEQLEN, seed=1)
    assert len(list((private_cache / "windows").glob("*.pt"))) == 2

    # new content under the same name: a new key, new windows
    path.write_text(" ".join(_words(8, 400).split()))
    third = calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=SEQLEN, seed=0)
    assert len(list((private_cache / "windows").glob("*.pt"))) == 3
    assert not torch.equal(first, third)
    assert torch.equal(third, calibration_windows(str(path), embedded_tokenizer, 4, SEQLEN, 0, cache=False))


def test_evaluation_window_cache(wikitext_parquet, embedded_tokenizer, private_cache, monkeypatch):
    source = f"wikitext2:{wikitext_parquet}"
    first = evaluation_windows(source, embedded_tokenizer, SEQLEN, None)
    with monkeypatch.context() as m:
        m.setattr(data, "_build_evaluation", lambda *a, **k: pytest.fail("the cache was not used"))
        second = evaluation_windows(source, embedded_tokenizer, SEQLEN, None)
    assert torch.equal(first, second)
    assert len(list((private_cache / "windows").glob("*.pt"))) == 1


# ------------------------------------------------------------------------------ embedded wiki extracts
def test_wiki_extracts_split_is_disjoint_by_article():
    calibration, evaluation = wiki_extracts_parts()
    assert len(calibration) == 7524
    assert len(evaluation) == 2509
    assert not set(calibration) & set(evaluation)
    articles = json.loads(data.wiki_extracts_file().read_text())
    ordered = sorted(articles.values(), key=lambda a: a["title"])
    assert evaluation[0] == ordered[0]["extract"] and calibration[0] == ordered[1]["extract"]


def test_parity_windows(embedded_tokenizer):
    expected = json.loads((PARITY / "windows.json").read_text())
    calibration = calibration_windows("wiki-extracts", embedded_tokenizer, nsamples=16, seqlen=512, seed=0)
    evaluation = evaluation_windows("wiki-extracts", embedded_tokenizer, 512, 24)
    assert calibration.shape == (16, 512) and evaluation.shape == (24, 512)
    assert calibration.tolist() == expected["calibration"]
    assert evaluation.tolist() == expected["evaluation"]


@pytest.mark.parametrize("source", ["c4:", "wikitext2:"])
def test_prefix_without_path_is_refused(source):
    with pytest.raises(ConfigError, match="after the colon"):
        data.check_source(source)
