"""The README stays a user's page that is true to the code: short, its links resolve, its Python example
runs (on the embedded model and data, with small counts), its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_every_relative_link_and_image_resolves():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_every_make_target_it_names_exists():
    targets = set(re.findall(r"^([a-zA-Z0-9_.-]+):", (ROOT / "Makefile").read_text(), re.M))
    for name in re.findall(r"`make ([a-z][a-z0-9-]*)", README):
        assert name in targets, name


def test_tables_it_names_are_committed():
    for name in re.findall(r"`([a-z_]+\.(?:md|csv))`", README):
        assert (ROOT / "tables" / name).is_file(), name


def python_example() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    # the same calls on the embedded model and data, small enough for a test
    for old, new in [
        ('"meta-llama/Llama-2-7b-hf"', '"smollm2-135m"'),
        ('dtype="float16", device="cuda"', 'dtype="float32", device="cpu"'),
        ('"c4"', '"wiki-extracts"'),
        ('"wikitext2"', '"wiki-extracts"'),
        ("nsamples=128, seqlen=2048", "nsamples=2, seqlen=64"),
        ("seqlen=2048)", "seqlen=64, count=2)"),
    ]:
        assert old in code, old
        code = code.replace(old, new)
    return code


@pytest.mark.integration
def test_the_python_example_runs():
    done = subprocess.run(
        [sys.executable, "-c", python_example()], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    densities, perplexity = done.stdout.rsplit("]", 1)
    assert len(densities.strip("[").split(",")) == 30 and float(perplexity) > 1


def test_the_llama2_block_quotes_its_committed_measurements():
    """The time and memory the README promises for LLaMA-2-7B are the H200 run's, to the digit shown."""
    import json

    result = json.loads((ROOT / "bench/results/h200-2026-12-04/gpu-7b-wanda.json").read_text())
    runs = {run["run"]: run for run in result["runs"]}
    block = README[README.index("## Prune LLaMA-2-7B") : README.index("## Two commands")]
    for figure in (
        f"{result['dense_statistics_seconds']:.1f} s (peak {result['dense_statistics_peak_gib']:.1f} GiB",
        f"{runs['wanda DLP']['seconds']:.1f} s (peak {runs['wanda DLP']['peak_gib']:.1f} GiB)",
        f"{runs['wanda --offload']['seconds']:.1f} s at a peak of {runs['wanda --offload']['peak_gib']:.1f} GiB",
    ):
        assert figure in " ".join(block.split()), figure
    assert "76.84, OWL 30.58, **DLP 22.79** (dense 5.47)" in block  # the DLP authors' table for LLaMA-2-7B


def test_the_notebook_costs_are_the_committed_fresh_clone_run():
    """Each notebook's minutes in the README's cost table, and the total, are those of the fresh-clone run
    the README names (bench/fresh_reproduce.py's output)."""
    import json

    (name,) = set(re.findall(r"bench/results/(reproduce-quick-[a-z0-9-]+)\.md", README))
    result = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
    quoted = dict(re.findall(r"^\| `(\d\d_[a-z_]+)` \|.*\| ([0-9.]+) min \|", README, re.M))
    assert quoted == {nb: f"{seconds / 60:.1f}" for nb, seconds in result["notebook_seconds"].items()}
    total = (result["venv_seconds"] + result["reproduce_seconds"]) / 60
    assert f"{total:.1f} minutes" in README
