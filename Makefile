# Two commands for a fresh clone:  make demo   and   make test
# Both create .venv if missing and install the project into it (CPU torch, from the package index).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test bench bench-trainer bench-eval bench-tofu-tiny bench-tofu-smollm2 bench-editing \
	bench-robustness bench-sisa bench-ddp bench-second-domain bench-threads clean

$(BIN)/llm-forget: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/llm-forget

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/llm-forget demo --output runs/demo --overwrite

# The suite under 1 thread, then the numeric tests again under 2 (other floating-point paths). The first
# pass runs TEST_WORKERS processes of one thread each (pytest-xdist; one test file per worker at a time, so a
# file's shared fixtures are built once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -m numeric tests

# Benchmarks (BENCHMARKS.md): each writes benchmarks/results/*.json and prints its table. Long: minutes
# to an hour each on a 2-core CPU; `make bench` runs them all, one after another.
BENCH := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python benchmarks
# the editing bars are on 2 cores: those lines run with torch's default threads
BENCH2 := HF_HUB_OFFLINE=1 $(BIN)/python benchmarks

bench-trainer: install
	$(BENCH)/bench_trainer.py --model tiny-target --steps 30 --runs 3
bench-eval: install
	$(BENCH)/bench_eval.py
bench-tofu-tiny: install
	$(BENCH)/tofu_protocol.py --scale tiny --threads 1 --select-targets max,holdout
bench-tofu-smollm2: install
	$(BENCH)/tofu_protocol.py --scale smollm2 --threads 2 --select-targets holdout --robustness none
	$(BENCH)/tofu_protocol.py --scale smollm2 --threads 2 --select-targets holdout --robustness none \
		--recipes npo --lr npo=1e-4 --select-every 2
	$(BENCH)/tofu_protocol.py --scale smollm2 --splits forget01 --recipes kl --threads 2 --robustness none \
		--shipped --results tofu_smollm2_shipped
bench-editing: install
	$(BENCH)/bench_editing.py --methods memit --n 100 --lambdas 3000,10000,30000,100000 --clamp_norm 4 \
	    --n_tokens 50000 --n_value_prefixes 2 --n_key_prefixes 5 --out runs/bench_editing_memit_sweep
	$(BENCH)/bench_editing.py --methods alphaedit,rome,lora_edit --n 100 --n_tokens 50000 \
	    --n_value_prefixes 2 --n_key_prefixes 5 --out runs/bench_editing_seq
	$(BENCH2)/bench_editing.py --compare_solvers --n 100 --mom2_weight 3000 --clamp_norm 4 --n_tokens 20000 \
	    --n_value_prefixes 2 --n_key_prefixes 5 --out runs/bench_editing_solvers
	$(BENCH2)/bench_editing.py --methods memit --n 1000 --mom2_weight 3000 --clamp_norm 4 \
	    --n_tokens 20000 --n_value_prefixes 2 --n_key_prefixes 5 --v_batch 32 --out runs/bench_editing_memit1k
	$(BENCH)/bench_editing.py --methods alphaedit,memit --stream 10 --seq_batch 100 --n 1000 --mom2_weight 3000 \
	    --clamp_norm 4 --n_tokens 20000 --n_value_prefixes 2 --n_key_prefixes 5 --out runs/bench_editing_stream
bench-robustness: install
	$(BENCH)/bench_robustness.py
bench-sisa: install
	$(BENCH)/sisa_cost.py
bench-ddp: install
	$(BENCH)/ddp_parity.py
bench-second-domain: install
	$(BENCH)/second_domain.py --seed 0
bench-threads: install  # needs an otherwise idle machine
	$(BENCH)/threads_shared_cpu.py --reps 3 --timeout 300 --extra "" --out benchmarks/results/threads_shared_cpu_idle_full.json

bench: bench-trainer bench-eval bench-tofu-tiny bench-tofu-smollm2 bench-robustness bench-sisa bench-ddp bench-editing \
	bench-second-domain bench-threads

clean:
	rm -rf $(VENV) runs .pytest_cache
