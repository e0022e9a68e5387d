# polab set-up: `make main` runs the main job, `make test` runs the test suite.
# Each target does all the set-up it needs on a fresh machine.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.polab_setup_stamp

.PHONY: setup main test test-fast bench clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	bash .ci/setup.sh $(PY) $(VENV)
	touch $(STAMP)

# The main job: DUMP-GRPO next to uniform GRPO (same seed) on the embedded SmolLM2-135M-Instruct, graded arithmetic,
# held-out accuracy before/after with intervals, one figure, a three-line summary (polab run main-demo; 2 CPU processes).
# Each run gets a fresh timestamped folder (polab refuses to write into a non-empty one), and
# runs/main-latest points at the newest.
# Simply expanded (:=) so the run and the link use one timestamp; `make main MAIN_OUT=runs/x` overrides it.
ifeq ($(origin MAIN_OUT), undefined)
MAIN_OUT := runs/main-$(shell date +%Y%m%d-%H%M%S)
endif
main: setup
	$(VENV)/bin/polab run main-demo --out $(MAIN_OUT)
	mkdir -p runs && ln -sfn $(abspath $(MAIN_OUT)) runs/main-latest

# The full test suite (exactly what CI runs).
test: setup
	bash .ci/setup_peers.sh $(PY) .venv-peers
	bash .ci/pytest.sh

bench: setup
	$(VPY) -m pip install -q -e '.[bench]'
	$(VPY) benchmarks/grpo_step_vs_trl.py
	OMP_NUM_THREADS=1 $(VPY) benchmarks/martingale_pe.py
	OMP_NUM_THREADS=1 $(VPY) benchmarks/smoothing_certificates.py
	OMP_NUM_THREADS=1 $(VPY) benchmarks/tppo_wallclock.py
	$(VPY) benchmarks/text_env_steps.py
	OMP_NUM_THREADS=1 $(VPY) benchmarks/agent_rollout_vs_generate.py
	$(VPY) benchmarks/grpo_step_profile.py --steps 1
	$(VPY) benchmarks/omp_wait_policy.py --repeats 1
	if [ -x .venv-peers/bin/python ]; then $(VPY) benchmarks/offline_td3bc_vs_d3rlpy.py; \
	else echo "offline_td3bc_vs_d3rlpy: skipped (the peers' venv .venv-peers is absent)"; fi
