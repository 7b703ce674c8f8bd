"""CPU inference engines timed on ``dlp_lib.export``'s graphs: what pruned weights buy outside PyTorch.

This module needs only numpy and the engines, never torch: it runs in the engines' own environment
(``make engines-venv``: DeepSparse 1.8 pins onnx 1.14 and numpy 1.x, which the main environment has moved
past). ``bench/engines.py`` exports each pruned model in the main environment and calls

    python -m dlp_lib.engines <export directory> --engine deepsparse --out result.json

here, once per engine. Engines:

- ``onnxruntime``: ONNX Runtime's CPU provider in float32, what a user would run an ONNX model in otherwise;
  it has no sparse kernels, so it is the control.
- ``deepsparse``: Neural Magic's DeepSparse 1.8 (deprecated 2025-06, community licence), OWL's README's CPU
  path; it skips the zeros of unstructured sparse weights in its own kernels.
- ``openvino``: OpenVINO's CPU plugin at its default precision (bfloat16 where the CPU has it, as on AMX Xeons).
- ``openvino-int8-sparse``: OpenVINO with weights and activations quantized to int8 by NNCF (calibrated on the
  graph's own inputs) and the CPU plugin's sparse weight decompression asked for
  (``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE``: a weight at least that sparse is stored packed and unpacked in
  the kernel; documented for int8 weights on AMX CPUs; int8 weights with bf16 activations ran no faster
  sparse than dense here). The same quantized graph is also timed without the option
  (``<graph>_ms_unpacked``), so a run says what the packing itself buys.

Each run compiles the prefill and the decode graph, times each (warm, best of ``repeats``), and compares the
logits with PyTorch's (``reference.npz``): the largest difference relative to the largest logit, and the
fraction of positions whose most likely next token agrees.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata as importlib_metadata, util as importlib_util
from pathlib import Path

import numpy as np

from .errors import ConfigError

SPARSE_DECOMPRESSION_RATE = 0.5
# engines without sparse kernels, whose speed-ups show the measurement's noise (bench/engines.py adds PyTorch)
CONTROL_ENGINES = ("pytorch", "onnxruntime")
MIN_NOISE = 0.05


@dataclass(frozen=True)
class Engine:
    name: str
    package: str  # the import that must succeed
    description: str


ENGINES = {
    e.name: e
    for e in (
        Engine("onnxruntime", "onnxruntime", "ONNX Runtime 'CPUExecutionProvider', float32 (no sparse kernels)"),
        Engine("deepsparse", "deepsparse", "DeepSparse 1.8, float32, unstructured-sparse kernels"),
        Engine("openvino", "openvino", "OpenVINO CPU plugin, default precision (bf16 on AMX)"),
        Engine(
            "openvino-int8-sparse",
            "nncf",
            f"OpenVINO, int8 weights and activations (NNCF), sparse weight packing at {SPARSE_DECOMPRESSION_RATE}",
        ),
    )
}


def unavailable(name: str) -> str | None:
    """Why engine ``name`` cannot run in this interpreter, or None when it can."""
    if name not in ENGINES:
        return f"unknown engine {name!r}; use one of {', '.join(ENGINES)}"
    packages = [ENGINES[name].package] + (["openvino"] if name.startswith("openvino") else [])
    for package in packages:
        if importlib_util.find_spec(package) is None:
            return f"{package} is not installed in {sys.executable} (make engines-venv installs the engines)"
    return None


def graph_inputs(reference, graph: str) -> tuple[list[str], list[np.ndarray]]:
    """The input names and arrays of ``graph`` ("prefill" or "decode") in the graph's order, from
    ``reference.npz``'s arrays (a dict or the loaded file): the one place the export
    (:func:`dlp_lib.export.export_onnx`) and the engines agree on them."""
    arrays = [reference[f"{graph}_input_ids"], reference[f"{graph}_attention_mask"]]
    if graph == "decode":
        count = sum(1 for name in reference.keys() if name.startswith("decode_past_"))
        arrays += [reference[f"decode_past_{i}"] for i in range(count)]
    names = ["input_ids", "attention_mask"] + [f"past_{i}" for i in range(len(arrays) - 2)]
    return names, [np.ascontiguousarray(a) for a in arrays]


EXPORT_FILES = ("prefill.onnx", "decode.onnx", "reference.npz")
REWRITE = "write the export again with dlp_lib.export.export_onnx"


def _check_reference(path: Path) -> dict[str, list[str]]:
    """The input names of each graph, from a ``reference.npz`` read whole (it is small): a file numpy cannot
    read as an ``.npz``, or one that lacks an array the graphs need, is a ConfigError naming it."""
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # else numpy takes it for a pickle and says how to load one unsafely
            raise ConfigError(f"{path} is not an .npz archive (it is not a zip file); {REWRITE}")
    try:
        reference = np.load(path)
        with reference:
            needed = [
                f"{g}_{what}" for g in ("prefill", "decode") for what in ("input_ids", "attention_mask", "logits")
            ]
            missing = [name for name in needed if name not in reference.files]
            if missing:
                raise ConfigError(f"{path} lacks the arrays {', '.join(missing)}; {REWRITE}")
            names = {graph: graph_inputs(reference, graph)[0] for graph in ("prefill", "decode")}
            for name in reference.files:  # read each, so that a damaged member fails here
                reference[name]  # noqa: B018
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path} is not a readable .npz archive ({' '.join(str(err).split())}); {REWRITE}") from None
    return names


def _check_graph(path: Path, inputs: list[str]) -> None:
    """An ONNX graph that parses (with the onnx package where installed; else its first byte, ModelProto's
    ir_version field) and has the export's inputs and a ``logits`` output; else a ConfigError naming it."""
    if path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty; {REWRITE}")
    if importlib_util.find_spec("onnx") is None:
        with open(path, "rb") as f:
            if f.read(1) != b"\x08":
                raise ConfigError(f"{path} is not an ONNX graph; {REWRITE}")
        return
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # protobuf's DecodeError and whatever else a damaged file trips
        raise ConfigError(f"{path} is not a readable ONNX graph ({type(err).__name__}: {err}); {REWRITE}") from None
    found = [i.name for i in graph.input]
    if found[: len(inputs)] != inputs or "logits" not in [o.name for o in graph.output]:
        raise ConfigError(
            f"{path} is not an export's graph (inputs {found[:4]}, outputs {[o.name for o in graph.output][:2]}; "
            f"expected inputs {inputs[:4]} and logits); {REWRITE}"
        )


def check_export(directory: str | Path) -> None:
    """Refuse, before an engine starts, a folder that is not an export ``dlp_lib.export.export_onnx`` wrote:
    a file missing, empty, truncated or of another kind; one-line ConfigErrors naming the file."""
    directory = Path(directory)
    missing = [name for name in EXPORT_FILES if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"{directory} lacks {', '.join(missing)}: write it with dlp_lib.export.export_onnx")
    inputs = _check_reference(directory / "reference.npz")
    for graph in ("prefill", "decode"):
        _check_graph(directory / f"{graph}.onnx", inputs[graph])


def _onnxruntime(path: Path, names: list[str], arrays: list[np.ndarray]):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda arrays: session.run(["logits"], dict(zip(names, arrays)))[0], {}


def _deepsparse(path: Path, names: list[str], arrays: list[np.ndarray]):
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # no network here, and none wanted
    from deepsparse import Engine as DeepSparseEngine

    engine = DeepSparseEngine(model=str(path), batch_size=1)
    return lambda arrays: engine.run(arrays)[0], {}


def _openvino_runner(compiled, names: list[str]):
    request = compiled.create_infer_request()
    logits = compiled.output("logits")

    def run(arrays):
        request.infer(dict(zip(names, arrays)))
        return request.get_tensor(logits).data.copy()

    return run


def _openvino(path: Path, names: list[str], arrays: list[np.ndarray], int8_sparse: bool = False):
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    config = {}
    if int8_sparse:
        import nncf

        calibration = nncf.Dataset([dict(zip(names, arrays))])
        model = nncf.quantize(model, calibration, subset_size=1, model_type=nncf.ModelType.TRANSFORMER)
        config["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = SPARSE_DECOMPRESSION_RATE
    compiled = core.compile_model(model, "CPU", config)
    run = _openvino_runner(compiled, names)

    # the kernel chosen for each fully connected layer, as the compiled model names it
    kernels: dict[str, int] = {}
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) == "FullyConnected":
            kernel = info["primitiveType"].astype(str)
            kernels[kernel] = kernels.get(kernel, 0) + 1
    details = {
        "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        "linear_kernels": kernels,
    }
    if int8_sparse:
        unpacked = _openvino_runner(core.compile_model(model, "CPU"), names)
        details["ms_unpacked"] = best_seconds(lambda: unpacked(arrays), repeats=3) * 1e3
    return run, details


def _loader(name: str):
    if name == "onnxruntime":
        return _onnxruntime
    if name == "deepsparse":
        return _deepsparse
    if name == "openvino":
        return _openvino
    return lambda path, names, arrays: _openvino(path, names, arrays, int8_sparse=True)


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def best_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """Largest absolute difference relative to the reference's largest logit, and the fraction of positions
    whose arg-max (the greedy next token) agrees."""
    logits = np.asarray(logits, dtype=np.float32).reshape(reference.shape)
    scale = float(np.abs(reference).max()) or 1.0
    return {
        "difference": float(np.abs(logits - reference).max()) / scale,
        "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
    }


def measure(name: str, directory: str | Path, repeats: int = 5) -> dict:
    """Compile and time ``name`` on the prefill and decode graphs in ``directory``; see the module docstring."""
    reason = unavailable(name)
    if reason:
        raise RuntimeError(reason)
    directory = Path(directory)
    reference = np.load(directory / "reference.npz")
    row = {"engine": name, "description": ENGINES[name].description, "version": _version(ENGINES[name].package)}
    for graph in ("prefill", "decode"):
        names, arrays = graph_inputs(reference, graph)
        start = time.perf_counter()
        run, details = _loader(name)(directory / f"{graph}.onnx", names, arrays)
        row[f"{graph}_compile_s"] = time.perf_counter() - start
        logits = run(arrays)
        seconds = best_seconds(lambda run=run, arrays=arrays: run(arrays), repeats)
        tokens = arrays[0].shape[1]
        row[f"{graph}_ms"] = seconds * 1e3
        row[f"{graph}_tps"] = tokens / seconds
        for key, value in agreement(logits, reference[f"{graph}_logits"]).items():
            row[f"{graph}_{key}"] = value
        row |= {f"{graph}_{key}": value for key, value in details.items()}
        del run
    return row


# ------------------------------------------------------------------------------ reading the results
def speedups(rows: list[dict]) -> list[dict]:
    """Each sparse row's prefill and decode speed-up over the same engine's dense runs: over the fastest of
    them, so that a slow dense run (a busy minute) cannot make a pruned one look fast; ``dense_spread`` is how
    far the dense runs differ (slowest / fastest - 1). For OpenVINO's sparse packing, ``packing_gain`` is the
    same quantized model's time without the packing over its time with it."""
    dense = {}
    for row in rows:
        if row["variant"] == "dense" and "error" not in row:
            dense.setdefault(row["engine"], []).append(row)
    out = []
    for row in rows:
        base = dense.get(row["engine"])
        if row["variant"] == "dense" or "error" in row or not base:
            continue
        entry = {"variant": row["variant"], "engine": row["engine"]}
        for graph in ("prefill", "decode"):
            times = [b[f"{graph}_ms"] for b in base]
            entry[f"{graph}_speedup"] = min(times) / row[f"{graph}_ms"]
            entry[f"{graph}_dense_spread"] = (max(times) - min(times)) / min(times)
            if f"{graph}_top1_agreement" in row:
                entry[f"{graph}_top1_agreement"] = row[f"{graph}_top1_agreement"]
                entry[f"{graph}_difference"] = row[f"{graph}_difference"]
            if f"{graph}_ms_unpacked" in row:
                entry[f"{graph}_packing_gain"] = row[f"{graph}_ms_unpacked"] / row[f"{graph}_ms"]
        out.append(entry)
    # the controls have no sparse kernels: how far their ratios stray from 1 is how much the measurement
    # moves when nothing changes, and no ratio of any engine is read closer to 1 than that
    for graph in ("prefill", "decode"):
        ratios = [e[f"{graph}_speedup"] for e in out if e["engine"] in CONTROL_ENGINES]
        strays = [max(r, 1 / r) - 1 for r in ratios]  # 0.8x strays as far as 1.25x
        for entry in out:
            entry[f"{graph}_noise"] = max([MIN_NOISE, entry[f"{graph}_dense_spread"], *strays])
    return out


def verdict(entry: dict, graph: str) -> str:
    """ "faster", "slower" or "within noise": a ratio counts only beyond its ``noise`` (the largest of the
    engine's dense runs' spread, the control engines' largest stray from 1 and 5%)."""
    ratio = entry[f"{graph}_speedup"]
    spread = entry.get(f"{graph}_noise", max(entry[f"{graph}_dense_spread"], MIN_NOISE))
    if ratio > 1 + spread:
        return "faster"
    if ratio < 1 / (1 + spread):
        return "slower"
    return "within noise"


def load_results(directory: str | Path, name: str = "engines-cpu.json") -> dict | None:
    """``bench/engines.py``'s committed result in ``directory``, or None when there is none."""
    path = Path(directory) / name
    return json.loads(path.read_text()) if path.is_file() else None


def summary_rows(result: dict) -> list[dict]:
    """One row per (pruned variant, engine) of a ``bench/engines.py`` result: speed-ups over the engine's own
    dense run with their verdicts, greedy-token agreement with PyTorch, and the engine's dense tokens/s."""
    dense = {}
    for run in result["runs"]:
        if run["variant"] == "dense" and "error" not in run:
            best = dense.get(run["engine"])
            dense[run["engine"]] = run if best is None or run["decode_tps"] > best["decode_tps"] else best
    rows = []
    for entry in result["speedups"]:
        base = dense[entry["engine"]]
        row = {"variant": entry["variant"], "engine": entry["engine"]}
        for graph in ("prefill", "decode"):
            row[f"{graph}_speedup"] = round(entry[f"{graph}_speedup"], 3)
            row[f"{graph}_verdict"] = verdict(entry, graph)
            row[f"{graph}_noise"] = round(entry[f"{graph}_noise"], 3)
            row[f"{graph}_dense_tps"] = round(base[f"{graph}_tps"], 1)
            row[f"{graph}_top1_agreement"] = entry.get(f"{graph}_top1_agreement")
            if f"{graph}_packing_gain" in entry:
                row[f"{graph}_packing_gain"] = round(entry[f"{graph}_packing_gain"], 3)
        rows.append(row)
    return rows


def sentences(result: dict) -> str:
    """What the engine measurements show, per engine, in markdown sentences (from the numbers only)."""
    rows = summary_rows(result)
    lines = []
    for engine in dict.fromkeys(r["engine"] for r in rows):
        mine = [r for r in rows if r["engine"] == engine]
        parts = []
        for graph in ("prefill", "decode"):
            faster = [r for r in mine if r[f"{graph}_verdict"] == "faster"]
            slower = [r for r in mine if r[f"{graph}_verdict"] == "slower"]
            low = min(r[f"{graph}_speedup"] for r in mine)
            high = max(r[f"{graph}_speedup"] for r in mine)
            parts.append(
                f"{graph} {low:.2f}-{high:.2f}x ({len(faster)} of {len(mine)} variants faster beyond the noise of "
                f"±{mine[0][f'{graph}_noise']:.0%}, {len(slower)} slower)"
            )
        best = max(mine, key=lambda r: r["decode_speedup"])
        line = (
            f"- **{engine}**: {'; '.join(parts)}; the largest decode speed-up is {best['variant']}'s "
            f"{best['decode_speedup']:.2f}x (dense: {best['decode_dense_tps']:.1f} tokens/s)."
        )
        gains = {g: [r[f"{g}_packing_gain"] for r in mine if f"{g}_packing_gain" in r] for g in ("prefill", "decode")}
        if gains["decode"]:
            line += (
                " The sparse packing itself (the same quantized model timed without it over with it): "
                + ", ".join(f"{g} {min(v):.2f}-{max(v):.2f}x" for g, v in gains.items() if v)
                + "."
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlp_lib.engines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", nargs="?", help="an export directory (prefill.onnx, decode.onnx, reference.npz)")
    parser.add_argument("--engine", choices=sorted(ENGINES), help="the engine to time")
    parser.add_argument("--repeats", type=int, default=5, help="best of N timed calls per graph")
    parser.add_argument("--out", help="write the result here as JSON (default: print it)")
    parser.add_argument("--available", action="store_true", help="print each engine and why it cannot run, if so")
    args = parser.parse_args(argv)
    if args.available:
        print(json.dumps({name: unavailable(name) for name in ENGINES}))
        return 0
    if not args.directory or not args.engine:
        parser.error("give an export directory and --engine (or --available)")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")
    try:
        check_export(args.directory)
    except ConfigError as err:
        print(f"{parser.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    reason = unavailable(args.engine)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    row = measure(args.engine, args.directory, args.repeats)
    text = json.dumps(row, indent=1)
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
