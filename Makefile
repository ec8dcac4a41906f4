# vm-agent: `make run` starts the daemon in development mode, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint format bench bench-terminal stress agents docker image-check clean

$(BIN)/python:
	@bash scripts/bootstrap-python.sh "$(PYTHON)" "$(VENV)"

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

## run: the daemon with self-signed TLS, a local dev JWKS and printed tokens (Ctrl-C stops it)
run: $(STAMP)
	@bash scripts/build-console.sh || echo "console not built (needs node and npm): the API still works"
	$(BIN)/vm-agent dev

## agents: install the pinned coding agents (Node 22, pi, claude-agent-acp) under agent-runtimes/
agents:
	@bash scripts/install-agents.sh

## docker: start a Docker daemon if none answers (root; CI does this)
docker:
	@bash scripts/start-dockerd.sh

## test: lint, then every test (tests needing Docker or the npm agents skip with a reason when absent)
test: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
	  bash scripts/install-agents.sh || echo "agents not installed: their tests will skip"; \
	  bash scripts/build-console.sh || echo "console not built: its browser tests will skip"; \
	fi
	$(BIN)/ruff check vm_agent tests bench
	$(BIN)/pytest -q -ra --durations=15 -m "not stress"

test-fast: $(STAMP)
	$(BIN)/pytest -q -x -m "not docker and not agents and not browser and not stress"

lint: $(STAMP)
	$(BIN)/ruff check vm_agent tests bench

## image-check: bake the package into a Debian container with cloud-init's steps and check it (root, Docker)
image-check: $(STAMP)
	@bash scripts/start-dockerd.sh
	@bash scripts/image-check.sh

## stress: fuzzing, reconnect cycles, floods, faults (VM_AGENT_STRESS_PROFILE=short|full, default full)
stress: $(STAMP)
	@bash scripts/install-stress-deps.sh
	VM_AGENT_STRESS_PROFILE=$${VM_AGENT_STRESS_PROFILE:-full} $(BIN)/pytest -q -ra -m stress tests/stress $(STRESS_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## bench-terminal: the terminal benchmark at full size, near-target rows run 5 times (median of calm runs)
bench-terminal: $(STAMP)
	$(BIN)/python bench/terminal.py --repeat 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
