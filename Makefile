# The two commands of the README. Each sets up .venv first (idempotent, seconds when current).
.PHONY: setup run hello test lint

PROMPT ?= What is the capital of France?

setup:
	@bash scripts/setup.sh

## The main job: the end-to-end demo on the embedded default model (about 11 minutes from a fresh clone on a 2-core
## CPU; a re-run re-uses finished steps). Report: runs/demo/report.html
run: setup
	.venv/bin/specialize demo --out runs/demo

## A reply from the embedded default model (materialised on first use).
hello: setup
	.venv/bin/specialize generate --model smollm2-135m-instruct "$(PROMPT)"

## The full test suite, slow tests on the real default model included.
test: setup
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check src tests benchmarks
