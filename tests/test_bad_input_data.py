"""The bad-input battery, input files: text read as a stream in bounded memory (and tokenised exactly as
one call would), and every file a run reads checked before the work, a bad one refused in one line that
names it (the line of a JSON-lines file, the field of a config.json) and says what to do: data files,
zero-shot task files, GGUF files, model configs, HF_ENDPOINT, the engines' exports."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import refused

from dlp_lib import data, documents, engines, hub, models, tokens, zeroshot
from dlp_lib.config import ConfigError
from dlp_lib.data import calibration_windows, evaluation_windows, training_windows

SEQLEN = 64


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


class _Recording:
    """A fast tokenizer that records the longest text it was handed and the characters it tokenised."""

    is_fast = True

    def __init__(self, tokenizer):
        self.tokenizer, self.longest, self.characters = tokenizer, 0, 0

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        self.characters += len(text)
        return self.tokenizer(text, **kwargs)


@pytest.fixture
def small_calls(monkeypatch):
    """Calls of 4096 characters overlapping by 1024, so that a text of a few hundred kB takes many."""
    monkeypatch.setattr(tokens, "TOKENIZE_CHARS", 4096)
    monkeypatch.setattr(tokens, "SYNC_CHARS", 1024)
    monkeypatch.setattr(documents, "READ_BYTES", 5000)


@pytest.fixture(scope="module")
def long_text():
    """About 300k characters of the embedded extracts, with runs longer than a call's overlap."""
    evaluation = data.wiki_extracts_parts()[1]
    odd = [" " * 3000, "x" * 5000, "😀é漢字" * 700, "   \n\n\n  " * 50]
    return "\n\n".join(evaluation[:300] + odd + evaluation[300:700])


# ------------------------------------------------------------------------------ bug 1: bounded memory
def test_a_long_txt_is_read_in_blocks_and_tokenised_in_bounded_calls(
    embedded_tokenizer, long_text, tmp_path, small_calls
):
    path = tmp_path / "long.txt"
    path.write_text(long_text, encoding="utf-8")
    whole = torch.tensor(embedded_tokenizer(long_text).input_ids)
    assert isinstance(data.open_documents(path), data.TextFile)
    assert max(len(block) for block in data.open_documents(path).blocks()) <= 5000  # never the whole file
    recording = _Recording(embedded_tokenizer)
    windows = evaluation_windows(str(path), recording, SEQLEN, cache=False)
    n = whole.numel() // SEQLEN
    assert torch.equal(windows, whole[: n * SEQLEN].reshape(n, SEQLEN)) and windows.dtype == torch.long
    # a longer call only where two calls agree nowhere: around the 5000-letter word, four calls' length
    assert recording.longest <= 4 * 4096 < len(long_text) / 10
    calibration = calibration_windows(str(path), recording, nsamples=8, seqlen=SEQLEN, seed=3, cache=False)
    assert torch.equal(calibration, data.sample_stream_windows(whole, 8, SEQLEN, 3))
    training = training_windows(str(path), recording, SEQLEN, count=5, cache=False)
    with_blank = torch.tensor(embedded_tokenizer(long_text + "\n\n").input_ids)
    assert torch.equal(training, with_blank[: 5 * SEQLEN].reshape(5, SEQLEN))


def test_the_first_windows_read_only_the_start_of_the_text(embedded_tokenizer, long_text, tmp_path, small_calls):
    path = tmp_path / "long.txt"
    path.write_text(long_text, encoding="utf-8")
    recording = _Recording(embedded_tokenizer)
    windows = evaluation_windows(str(path), recording, SEQLEN, count=3, cache=False)
    assert windows.tolist() == [
        embedded_tokenizer(long_text).input_ids[i * SEQLEN : (i + 1) * SEQLEN] for i in range(3)
    ]
    assert recording.characters < 4 * 4096  # not the 300k characters


def _trained(kind: str):
    """A small BPE tokenizer of another make than the embedded one: LLaMA-2's (a normalizer, no
    pre-tokenizer: the whole text one word), or Metaspace's with and without splitting; BOS added."""
    from tokenizers import Tokenizer, models as bpe_models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(bpe_models.BPE(unk_token="<unk>", byte_fallback=True))
    if kind == "llama2":
        bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=kind == "metaspace-split")
    bpe.train_from_iterator(
        data.wiki_extracts_parts()[0][:800], trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>", "<s>"])
    )
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", unk_token="<unk>")


@pytest.mark.parametrize("kind", ["embedded", "rehearsal", "llama2", "metaspace-split", "metaspace"])
def test_calls_joined_give_the_ids_of_one_call(kind, embedded_tokenizer, long_text, small_calls, monkeypatch):
    from dlp_lib import rehearsal

    tokenizer = {"embedded": lambda: embedded_tokenizer, "rehearsal": rehearsal.train_tokenizer}.get(
        kind, lambda: _trained(kind)
    )()
    longer = []
    encode = tokens._encode
    monkeypatch.setattr(tokens, "_encode", lambda tok, text: longer.append(len(text)) or encode(tok, text))
    whole = tokenizer(long_text).input_ids
    pieces = [long_text[i : i + 777] for i in range(0, len(long_text), 777)]
    assert data.token_stream(tokenizer, pieces).tolist() == whole
    if kind == "embedded":  # its BPE makes the 5000-letter run one token stretch that no two calls agree on
        assert max(longer) > 4096, "the longer call was not tried"
    start = data.token_stream(tokenizer, pieces, max_tokens=1000)
    assert 1000 <= start.numel() < len(whole) and start.tolist() == whole[: start.numel()]


def test_documents_of_a_jsonl_file_are_read_when_drawn(embedded_tokenizer, tmp_path):
    docs = data.wiki_extracts_parts()[0][:50]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n\n" for d in docs))
    opened = data.open_documents(path)
    assert isinstance(opened, data.JsonLinesFile) and len(opened) == 50 and opened[7] == docs[7]
    assert list(opened) == docs and opened[-1] == docs[-1]
    drawn = calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=32, seed=1, cache=False)
    assert torch.equal(drawn, data.sample_document_windows(docs, embedded_tokenizer, 4, 32, 1))


def test_a_parquet_calibration_file(embedded_tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = data.wiki_extracts_parts()[0][:40]
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": docs}), path, row_group_size=7)
    assert list(data.open_documents(path)) == docs and data.open_documents(path)[13] == docs[13]
    drawn = calibration_windows(str(path), embedded_tokenizer, nsamples=4, seqlen=32, seed=1, cache=False)
    assert torch.equal(drawn, data.sample_document_windows(docs, embedded_tokenizer, 4, 32, 1))


# ------------------------------------------------------------------- bug 2 and more: bad data files
def _parquet(path, table):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(table), path)


def _gzipped(text: str, cut: bool = False):
    def write(path):
        packed = gzip.compress(text.encode())
        path.write_bytes(packed[: len(packed) // 2] if cut else packed)

    return write


def _rows(**columns):
    return lambda path: _parquet(path, columns)


def _no_rows(path):
    import pyarrow as pa

    _parquet(path, {"text": pa.array([], pa.string())})


BAD_DATA = {  # file name, its content (text, bytes, or what writes it), what the line says
    "jsonl text a number": ("n.jsonl", '{"text": "a"}\n{"text": 12}\n', "n.jsonl:2: expected one JSON object"),
    "jsonl text missing": ("m.jsonl", '{"text": "a"}\n\n{"body": "b"}\n', "m.jsonl:3:"),
    "jsonl text null": ("z.jsonl", '{"text": null}\n', "z.jsonl:1: expected one JSON object with a string 'text'"),
    "jsonl not JSON": ("j.jsonl", '{"text": "a"}\nnot json\n', "j.jsonl:2: not JSON"),
    "jsonl a JSON array": ("a.jsonl", '[{"text": "a"}, {"text": "b"}]\n', "got a JSON array"),
    "json pretty-printed array": ("p.json", '[\n  {"text": "a"}\n]\n', "p.json:1: not JSON"),
    "jsonl bad line far down": ("f.jsonl", '{"text": "ok"}\n' * 5000 + '{"text": 1.5}\n', "f.jsonl:5001:"),
    "jsonl without documents": ("e.jsonl", "\n\n  \n", "holds no text"),
    "empty txt": ("empty.txt", "", "holds no text"),
    "blank txt": ("blank.txt", " \n\t\n", "holds no text"),
    "latin-1 beyond the first 64 kB": ("l.txt", b"a" * 100_000 + "café".encode("latin-1"), "at byte 100003"),
    "NUL bytes beyond the first 64 kB": ("nul.txt", b"a" * 100_000 + b"\x00\x01", "is not UTF-8 text"),
    "a cut character at the end": ("cut.txt", "text é".encode()[:-1], "is not UTF-8 text"),
    "latin-1 in a jsonl line": ("l1.jsonl", b'{"text": "a"}\n' * 9000 + '{"text": "é"}'.encode("latin-1"), "UTF-8"),
    "gzip line 3 not a string": ("c.json.gz", _gzipped('{"text": "a"}\n' * 2 + '{"text": []}\n'), "c.json.gz:3:"),
    "truncated gzip": ("t.jsonl.gz", _gzipped('{"text": "abc"}\n' * 5000, cut=True), "cut short or damaged"),
    "parquet text of ints": ("i.parquet", _rows(text=[1, 2]), "column 'text' holds int64, not strings"),
    "parquet without text": ("w.parquet", _rows(body=["a"]), "has no 'text' column (its columns: body)"),
    "parquet with null text": ("u.parquet", _rows(text=["a", None]), "column 'text' has 1 null rows"),
    "parquet without rows": ("r.parquet", _no_rows, "holds no text"),
}


@pytest.mark.parametrize("name, content, expected", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_files_are_refused_before_loading(name, content, expected, tiny_args, tmp_path, capsys, no_loading):
    path = tmp_path / name
    if callable(content):
        content(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for flag in ("--calibration", "--eval"):
        line = refused([*tiny_args, flag, str(path)], capsys, tmp_path)
        assert expected in line and name in line


def test_a_directory_as_data_is_refused(tiny_args, tmp_path, capsys, no_loading):
    (tmp_path / "texts").mkdir()
    for source in (str(tmp_path / "texts"), f"c4:{tmp_path / 'texts'}"):
        line = refused([*tiny_args, "--calibration", source], capsys, tmp_path)
        assert "texts is a directory; give a .txt/.jsonl file" in line
    line = refused([*tiny_args, "--lora_steps", "2", "--lora_data", str(tmp_path / "texts")], capsys, tmp_path)
    assert "is a directory" in line


def test_bad_lines_are_named_by_the_library_too(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one"}\n{"text": 2}\n')
    for call in (lambda: data.read_documents(path), lambda: data.check_source(str(path))):
        with pytest.raises(ConfigError, match=r"docs\.jsonl:2: .*got 'text' is a JSON number"):
            call()


# ------------------------------------------------------------------------------ bug 3: zero-shot files
def _hub_dir(tmp_path, content) -> Path:
    directory = tmp_path / "hub-tasks"
    path = zeroshot.hub_file(directory, "boolq")
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _parquet(path, content)
    return directory


def _valid_parquet_bytes(tmp_path) -> bytes:
    _parquet(tmp_path / "valid.parquet", {"question": ["q"] * 50, "passage": ["p"] * 50, "label": [1] * 50})
    data_bytes = (tmp_path / "valid.parquet").read_bytes()
    (tmp_path / "valid.parquet").unlink()
    return data_bytes


@pytest.mark.parametrize("kind", ["empty", "truncated", "not parquet", "no rows"])
def test_bad_zero_shot_task_files_are_refused_before_loading(kind, tiny_args, tmp_path, capsys, no_loading):
    import pyarrow as pa

    content = {
        "empty": b"",
        "truncated": _valid_parquet_bytes(tmp_path)[:-30],
        "not parquet": b"question,label\nq,1\n",
        "no rows": {"question": pa.array([], pa.string())},
    }[kind]
    directory = _hub_dir(tmp_path, content)
    argv = [*tiny_args, "--eval_zero_shot", "--tasks", "boolq", "--zero_shot_source", f"hub:{directory}"]
    line = refused(argv, capsys, tmp_path)
    assert str(zeroshot.hub_file(directory, "boolq")) in line and "make rehearsal-assets" in line
    assert ("holds no rows" if kind == "no rows" else "is not a readable parquet file") in line


def test_a_foreign_folder_where_the_conversion_goes_is_refused_and_kept(tiny_args, tmp_path, capsys, no_loading):
    target = tmp_path / "cache" / "lm_eval_tasks" / zeroshot.files._task_dir_version()
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("someone else's")
    line = refused([*tiny_args, "--eval_zero_shot", "--tasks", "boolq"], capsys, tmp_path)
    assert str(target) in line and "python -m dlp_lib.zeroshot" in line
    with pytest.raises(ConfigError, match="not a complete conversion"):
        zeroshot.build_task_files()
    assert (target / "notes.txt").read_text() == "someone else's"  # never deleted


def test_a_conversion_cut_short_since_is_refused_and_kept(tmp_path):
    target = zeroshot.build_task_files(tmp_path / "tasks")
    zeroshot.files.check_task_files(tmp_path / "tasks")  # complete: nothing to say
    file = target / "rte_validation.jsonl"
    file.write_bytes(file.read_bytes()[:1000])
    for call in (zeroshot.files.check_task_files, zeroshot.build_task_files):
        with pytest.raises(ConfigError, match="cut short.*python -m dlp_lib.zeroshot"):
            call(tmp_path / "tasks")
    assert file.is_file()


# ------------------------------------------------------------------------------------- bug 4: GGUF
@pytest.fixture
def gguf_files(tmp_path):
    shipped = models.package_file(*models.EMBEDDED_MODELS["smollm2-135m"])
    with open(shipped, "rb") as f:
        head = f.read(1 << 20)
    files = {
        "garbage after the magic": b"GGUF" + b"\x03\x00\x00\x00" + b"garbage" * 20,
        "a version no reader knows": b"GGUF" + b"xxxx" * 30,
        "cut at 1 MB": head,
    }
    for i, content in enumerate(files.values()):
        (tmp_path / f"bad{i}.gguf").write_bytes(content)
    return [tmp_path / f"bad{i}.gguf" for i in range(len(files))]


def test_damaged_gguf_files_are_refused_before_loading(gguf_files, tiny_args, tmp_path, capsys, no_loading):
    for path in gguf_files:
        line = refused([*tiny_args, "--model", str(path)], capsys, tmp_path)
        assert f"{path.name} is not a complete GGUF file" in line and "download or convert it again" in line


def test_a_gguf_of_another_architecture_is_refused(tiny_args, tmp_path, capsys, no_loading):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "bert.gguf", "bert")
    writer.add_tensor("weight", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert "holds a 'bert' model" in refused([*tiny_args, "--model", str(tmp_path / "bert.gguf")], capsys, tmp_path)


def test_gguf_without_the_gguf_package(gguf_files, tiny_args, tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setattr(models, "_gguf_installed", lambda: False)
    line = refused([*tiny_args, "--model", str(gguf_files[0])], capsys, tmp_path)
    assert "needs the gguf package" in line and "pip install gguf" in line


# ------------------------------------------------------------------------------ bug 5: config sizes
BAD_SIZES = {
    "heads do not divide the width": (
        {"hidden_size": 30, "head_dim": None},
        "hidden_size 30 is not a multiple of num_attention_heads 4",
    ),
    "a width the weights do not have": ({"hidden_size": 48}, "hidden_size 48, but the token embedding in"),
    "kv heads do not divide the heads": ({"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide"),
    "a negative size": ({"intermediate_size": -64}, "intermediate_size must be a positive integer; got -64"),
    "a size as text": ({"num_hidden_layers": "3"}, "num_hidden_layers must be a positive integer; got '3'"),
    "zero heads": ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
    "a fractional vocabulary": ({"vocab_size": 10.5}, "vocab_size must be a positive integer"),
}


@pytest.mark.parametrize("change, expected", BAD_SIZES.values(), ids=BAD_SIZES.keys())
def test_config_sizes_that_do_not_fit_are_refused_before_loading(
    change, expected, tiny_model_dir, tiny_args, tmp_path, capsys, no_loading
):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    line = refused([*tiny_args, "--model", str(directory)], capsys, tmp_path)
    assert str(directory / "config.json") in line and expected in line


def test_a_shard_index_naming_a_missing_file(tiny_model_dir, tiny_args, tmp_path, capsys, no_loading):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    index = {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    line = refused([*tiny_args, "--model", str(directory)], capsys, tmp_path)
    assert "model.safetensors.index.json names weight files" in line and "model-00002-of-00002" in line


# ------------------------------------------------------------------------------------ bug 6: HF_ENDPOINT
@pytest.mark.parametrize("value", ["not a url", "ftp://x", "https://", "huggingface.co", "http://h:port"])
def test_an_invalid_hf_endpoint_is_refused(value, tiny_args, tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", value)
    monkeypatch.setattr(hub, "model_in_cache", lambda repo_id: True)  # asked even for a cached model
    line = refused([*tiny_args, "--model", "org/model"], capsys, tmp_path)
    assert f"HF_ENDPOINT={value!r} is not an http(s) URL" in line and "https://huggingface.co" in line
    with pytest.raises(ConfigError, match="HF_ENDPOINT"):
        hub.unreachable()


def test_a_valid_hf_endpoint_is_kept(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    assert hub.endpoint() == "https://hf-mirror.com"


# ------------------------------------------------------------------------------------ bug 7: engines
def _graph(path: Path, inputs: list[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.INT64, [1, 4]) for name in inputs]
    out = helper.make_tensor_value_info("logits", TensorProto.INT64, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", [inputs[0]], ["logits"])], "g", values, [out])
    onnx.save(helper.make_model(graph), path)


@pytest.fixture
def export_dir(tmp_path):
    """A folder shaped like dlp_lib.export's (tiny graphs with its inputs and a logits output)."""
    pytest.importorskip("onnx")
    directory = tmp_path / "export"
    directory.mkdir()
    ids, logits = np.zeros((1, 4), np.int64), np.zeros((1, 4, 8), np.float32)
    arrays = {f"{g}_{k}": ids for g in ("prefill", "decode") for k in ("input_ids", "attention_mask")}
    arrays |= {"prefill_logits": logits, "decode_logits": logits, "decode_past_0": logits, "decode_past_1": logits}
    np.savez(directory / "reference.npz", **arrays)
    _graph(directory / "prefill.onnx", ["input_ids", "attention_mask"])
    _graph(directory / "decode.onnx", ["input_ids", "attention_mask", "past_0", "past_1"])
    return directory


def _npy() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def _engines_refusal(directory, capsys) -> str:
    status = engines.main([str(directory), "--engine", "onnxruntime"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("python -m dlp_lib.engines: error: ")
    return err


def test_a_good_export_passes_the_check(export_dir):
    engines.check_export(export_dir)


BAD_EXPORTS = {
    "empty graph": ("prefill.onnx", lambda good: b"", "prefill.onnx is empty"),
    "not ONNX": ("decode.onnx", lambda good: b"PK\x03\x04 a zip", "decode.onnx is not a readable ONNX graph"),
    "truncated graph": ("prefill.onnx", lambda good: good[: len(good) // 2], "prefill.onnx is not a"),
    "another graph": ("decode.onnx", "prefill.onnx", "decode.onnx is not an export's graph"),
    "empty reference": ("reference.npz", lambda good: b"", "reference.npz is not an .npz archive"),
    "reference not npz": ("reference.npz", lambda good: b"text", "reference.npz is not an .npz archive"),
    "reference a .npy": ("reference.npz", lambda good: _npy(), "reference.npz is not an .npz archive"),
    "truncated reference": ("reference.npz", lambda good: good[:-200], "reference.npz is not a readable .npz"),
    "reference lacks arrays": ("reference.npz", "npz-without", "reference.npz lacks the arrays decode_logits"),
}


@pytest.mark.parametrize("name, change, expected", BAD_EXPORTS.values(), ids=BAD_EXPORTS.keys())
def test_bad_export_files_are_refused_before_an_engine_starts(name, change, expected, export_dir, capsys, monkeypatch):
    monkeypatch.setattr(engines, "measure", lambda *a, **k: pytest.fail("an engine started"))
    path = export_dir / name
    if change == "npz-without":
        kept = dict(np.load(path))
        del kept["decode_logits"]
        np.savez(path, **kept)
    elif isinstance(change, str):
        shutil.copy(export_dir / change, path)
    else:
        path.write_bytes(change(path.read_bytes()))
    assert expected in _engines_refusal(export_dir, capsys)


def test_the_engines_command_refuses_in_one_line(export_dir):
    import subprocess

    (export_dir / "reference.npz").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "dlp_lib.engines", str(export_dir), "--engine", "onnxruntime"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "reference.npz" in done.stderr
