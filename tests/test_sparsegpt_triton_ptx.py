"""SparseGPT's Triton sweep compiled for the GPUs it targets, without a GPU: Triton's NVIDIA backend turns
the kernel into PTX and, with the ptxas it ships, a cubin. The interpreter (tests/test_sparsegpt.py) checks
the kernel's arithmetic; this checks that the kernel compiles and that the compiled arithmetic is the same:
IEEE round-to-nearest divisions and no fused multiply-add, either of which would change the weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: conftest sets TRITON_INTERPRET=1 for this process, under which triton.jit
# hands back an interpreted function that cannot be compiled.
COMPILE = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from dlp_lib.sparsegpt_triton import BLOCK_ROWS, LAUNCH_OPTIONS, _kernel

kernel = _kernel()
types = {"W": "*fp32", "M": "*i8", "U": "*fp32", "D": "*fp32", "Err": "*fp32"}
constants = {"WIDTH": 128, "BLOCK": BLOCK_ROWS}
found = {}
for capability, n, group, fusion in json.loads(sys.argv[1]):
    values = {**constants, "N": n, "GROUP": group}
    signature = {a: "constexpr" if a in values else types.get(a, "i32") for a in kernel.arg_names}
    source = ASTSource(kernel, signature, {(kernel.arg_names.index(a),): v for a, v in values.items()})
    options = {**LAUNCH_OPTIONS, "enable_fp_fusion": LAUNCH_OPTIONS["enable_fp_fusion"] or fusion}
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)
    found[f"{capability} {n}:{group} {fusion}"] = {"ptx": compiled.asm["ptx"], "cubin": len(compiled.asm["cubin"])}
print(json.dumps(found))
"""


def compile_sweep(cases):
    """``{"<capability> <n>:<group> <fusion forced>": {"ptx": text, "cubin": bytes}}`` for each case."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def compiled():
    triton = pytest.importorskip("triton")
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("this triton has no NVIDIA backend with ptxas")
    # A100 and H100/H200; unstructured (N = 0) and 2:4; one with fused multiply-add allowed, as a control
    return compile_sweep([[80, 0, 1, False], [90, 0, 1, False], [90, 2, 4, False], [90, 0, 1, True]])


@pytest.mark.parametrize("case", ["80 0:1 False", "90 0:1 False", "90 2:4 False"])
def test_the_sweep_compiles_with_ieee_divisions_and_no_fused_multiply_add(compiled, case):
    ptx = compiled[case]["ptx"]
    assert compiled[case]["cubin"] > 0
    arithmetic = set(re.findall(r"\b(fma|mul|sub|add|div)\.(\w+)\.f32\b", ptx))
    assert ("div", "rn") in arithmetic and ("mul", "rn") in arithmetic and ("sub", "rn") in arithmetic
    assert not {op for op in arithmetic if op[0] == "fma"}, "a fused multiply-add rounds differently"
    assert not {op for op in arithmetic if op[0] == "div" and op[1] != "rn"}, "an approximate division"


def test_the_control_shows_the_check_would_see_a_fused_multiply_add(compiled):
    """With fusion allowed, the product and the subtraction fuse: the check above is not vacuous."""
    assert re.search(r"\bfma\.rn\.f32\b", compiled["90 0:1 True"]["ptx"])
