# jwtex: `make run` serves a development instance, `make test` runs the suite.
# Both work on a fresh machine with only Python 3.11+ (SQLite, embedded filesystem broker).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run serve test bench bench-http bench-scale migrate clean gitlab-component

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("jwtex needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

# Web service on http://$(HOST):$(PORT) plus a Celery worker with embedded beat on the
# filesystem broker under var/; JWTEX_PUBLIC_URL defaults to http://$(HOST):$(PORT), so issuer
# URLs follow. Ctrl-C stops both (jwtex_site/dev.py).
run: $(STAMP)
	@$(PY) -m jwtex_site.dev --host $(HOST) --port $(PORT)

# The production web server in the foreground (jwtex_site/serve.py): PORT, WEB_CONCURRENCY,
# JWTEX_SERVER_THREADS, JWTEX_SERVER=gunicorn|granian. No Celery: run the worker and beat apart.
serve: $(STAMP)
	@PORT=$(PORT) $(PY) -m jwtex_site.serve

# The whole suite, on every core (pytest-xdist; an idle worker takes tests queued for a busy one);
# PYTEST_ARGS="-n0 -x" for one process.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist worksteal $(PYTEST_ARGS)

# Per-step and end-to-end exchange costs on this machine (throwaway SQLite, or DATABASE_URL).
bench: $(STAMP)
	$(PY) bench/exchange_benchmark.py

# Served exchanges over HTTP against their in-process ceiling (bench/http_benchmark.py):
# one server process pinned to one core, wrk on another, PostgreSQL (or DATABASE_URL).
bench-http: $(STAMP)
	$(PY) bench/http_benchmark.py $(BENCH_ARGS)

# The GitLab CI/CD component carries the CI client inside its template (GitLab hands a job the
# component's YAML only): copy jwtex_token.py into it again after changing the client.
gitlab-component:
	$(PYTHON) templates/jwtex-token/embed_client.py

clean:
	rm -rf var/ .pytest_cache test-artifacts

# The admin's pages and the exchange as the audit table grows to millions of records
# (bench/scale_benchmark.py): a throwaway PostgreSQL database, a few minutes.
bench-scale: $(STAMP)
	$(PY) bench/scale_benchmark.py $(BENCH_ARGS)
