# costlab: `make run` for a local dashboard with demo data, `make test` for the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Everything make starts is local development: a generated key under var/, no HTTPS.
# A deployment sets SECRET_KEY instead (README, "Deployment / security").
export COSTLAB_DEV = true

.PHONY: run test lint fmt typecheck check install compile migrate clean bench

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

# The endpoint's hot modules built by mypyc into var/compiled/ (conversations/engine/
# compiled.py); nothing to do when that build is fresh, and the sources run without one.
compile: install
	$(BIN)/python bin/compile

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Web server and a real Celery worker, on SQLite and a filesystem broker (no server needed).
run: migrate compile
	DEBUG=true PORT=$(PORT) $(BIN)/python manage.py seed_demo
	DEBUG=true PORT=$(PORT) bin/run

# With a compiled build in use, the tests that patch a module's internals were skipped:
# they run then against the sources (tests/conftest.py).
test: compile
	$(BIN)/python -m pytest -n 2 --dist loadgroup
	if $(BIN)/python bin/compile --in-use; then \
	  COSTLAB_COMPILED=off $(BIN)/python -m pytest -n 2 --dist loadgroup -q -m pure_python; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrites files: the formatting the pre-commit hooks check, applied to the whole tree.
fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	find templates -name '*.html' -exec $(BIN)/djade --target-version 5.2 {} +

typecheck: install
	$(BIN)/mypy conversations costlab pricing calls tests

check: lint typecheck test

bench: compile
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) var
