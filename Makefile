# The README's two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
PORT   ?= 8000
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format bench lock mutate mutate-resume demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## make run [PORT=8000]: migrate, validate the courses, serve the web app with the send loop.
run: $(STAMP)
	$(BIN)/drip db upgrade
	$(BIN)/drip course validate
	$(BIN)/drip serve --scheduler --port $(PORT)

# Test tools from Debian's packages (headless Chromium, SpamAssassin), installed once where
# this runs as root with apt-get; elsewhere the tests needing them skip, saying why.
TOOLS_STAMP := $(VENV)/.test-tools-stamp
$(TOOLS_STAMP): | $(STAMP)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v spamassassin >/dev/null 2>&1 || missing="$$missing spamassassin"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing test tools:$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
			>/dev/null 2>&1 || echo "could not install$$missing: their tests will be skipped"; \
	fi
	touch $@

## make test: the whole suite (SQLite; PostgreSQL too when DRIP_TEST_POSTGRES_URL is set),
## on two workers (pytest-xdist), then the tests that compare durations alone;
## PYTEST_ARGS="tests/sending -k window" runs a part, in one process.
PYTEST_ARGS ?=
test: $(STAMP) $(TOOLS_STAMP)
ifeq ($(strip $(PYTEST_ARGS)),)
	$(BIN)/python -m pytest -n 2 -m "not timing"
	$(BIN)/python -m pytest -m timing
else
	$(BIN)/python -m pytest $(PYTEST_ARGS)
endif

## make lint: ruff, mypy, and the layers between drip's packages (import-linter)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make bench: throughput benchmarks; installs postfix's smtp-sink when it can (see README);
## PostgreSQL's figures when a server answers on 127.0.0.1:5432 (DRIP_BENCH_POSTGRES_URL).
bench: $(STAMP)
	-command -v smtp-sink >/dev/null 2>&1 || test -x /usr/sbin/smtp-sink || \
		(test "$$(id -u)" = 0 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null 2>&1)
	-command -v wrk >/dev/null 2>&1 || \
		(test "$$(id -u)" = 0 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1)
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/send_due.py
	$(BIN)/python benchmarks/signup.py
	$(BIN)/python benchmarks/scale.py
	-$(BIN)/python benchmarks/send_due.py --database postgresql --processes 1,2

## make mutate: mutation testing of the modules that carry the guarantees, then the verdict
## (>= 90 % killed, every survivor listed in docs/development.md). Several hours on 2 cores;
## make mutate-resume goes on with a run that was stopped, keeping what it had checked.
mutate: $(STAMP)
	rm -rf mutants
	$(MAKE) mutate-resume

mutate-resume: $(STAMP)
	-DRIP_TEST_POSTGRES_URL="$${DRIP_TEST_POSTGRES_URL:-$$(python3 -c 'import socket; socket.create_connection(("127.0.0.1", 5432), timeout=2).close(); print("postgresql+psycopg://postgres@127.0.0.1:5432/test")' 2>/dev/null)}" \
		$(BIN)/mutmut run
	$(BIN)/python tests/mutation_report.py

## make lock: re-pin the image's dependencies, and what builds them, with hashes.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file requirements-build.lock \
		requirements-build.in

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
