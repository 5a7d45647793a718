# The whole set-up is two commands, run as root from the repo root:
#   make demo   - the seed scenario on two local clouds (bielefeld ⇄ giessen)
#   make test   - every test
.PHONY: demo demo-down test test-fast lint bench bootstrap

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

demo-down: bootstrap
	@scripts/demo.sh down

test: bootstrap
	.venv/bin/ruff check .
	.venv/bin/python -m pytest tests -q
	scripts/conformance.sh

test-fast: bootstrap
	.venv/bin/python -m pytest tests -q -m "not dataplane and not slow"

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: bootstrap
	.venv/bin/python bench/run_all.py
