# One entry point for the book. `make book` builds the site, `make test` runs every test.
# Both create the virtual environment in .venv from requirements.txt (and requirements-nodeps.txt) first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN ?= $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt pyproject.toml | cksum | cut -d' ' -f1)

help:
	@echo "make book   install everything into .venv and build the site into _build/html"
	@echo "make test   install everything and run all tests (unit, book build, HTML, browser)"
	@echo "make check CHAPTER=fermi  build one chapter alone (its own warnings fail) and run its tests"
	@echo "make problems  build the instructors' problems-only edition into _build/problems"
	@echo "make pdf    print _build/pdf/book.pdf and problems.pdf (run make book and make problems first)"
	@echo "make sync   rewrite bootstrap cells, notebook normal form, Problem Index, LIBRARY-USES.md"
	@echo "make format ruff format lib/ tests/ tools/ and notebook code cells (not parameters cells)"
	@echo "make lint   check, without writing, what make format would change (make test runs it)"
	@echo "make clean  remove _build"
	@echo "make clean-venv  remove .venv (the next target reinstalls it)"

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Every target that uses the venv passes here: stop if its llmbook is another checkout's.
# `make ... BIN=/path/to/venv/bin` uses an existing environment as it is (nothing installed).
ifeq ($(origin BIN),file)
install: $(STAMP)
	@$(BIN)/python tools/check_venv.py
else
install:
	@$(BIN)/python tools/check_venv.py
endif

# Debian's Chromium for the browser test (Playwright drives it; no browser is downloaded),
# and iproute2 + git for the offline Colab simulation (`ip link set lo up` in a new namespace).
chromium:
	@command -v chromium >/dev/null && command -v ip >/dev/null && command -v git >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium iproute2 git >/dev/null; }

# A clean build: every notebook executes, warnings are errors, a failing notebook fails the build.
book: install
	rm -rf _build
	$(BIN)/jupyter-book build . -W -n --keep-going 2>&1 | tee _build.log
	@$(BIN)/python tools/exec_times.py
	@echo "open _build/html/index.html"

# The instructors' edition: every question, no solution, notebook pages reduced to titles.
# Reuses the notebooks executed by `make book` (their cache); builds into _build/problems/.
problems: install
	mkdir -p _build
	$(BIN)/python -m llmbook.book problems-config > _build/problems_config.yml
	rm -rf _build/problems
	$(BIN)/jupyter-book build . --config _build/problems_config.yml --path-output _build/problems -W -n --keep-going
	@echo "open _build/problems/_build/html/index.html"

# Both editions printed by Chromium (Playwright), merged with pypdf in toc order, one bookmark
# per page: _build/pdf/book.pdf (every solution open) and _build/pdf/problems.pdf. Prints the
# builds that `make book` and `make problems` left; it does not run them.
pdf: install chromium
	$(BIN)/python tools/make_pdf.py

test: install chromium lint
	$(BIN)/python -m pytest

sync: install
	$(BIN)/python -m llmbook.book sync

# One formatter, pinned in requirements.txt and configured in pyproject.toml [tool.ruff].
# Notebooks: each code cell on its own, except the bootstrap and parameters cells.
FORMATTED := lib tests tools

format: install
	$(BIN)/python -m ruff format $(FORMATTED)
	$(BIN)/python -m llmbook.book format

lint: install
	@$(BIN)/python -m ruff format --check $(FORMATTED) || { echo "run \`make format\`"; exit 1; }
	@$(BIN)/python -m llmbook.book lint

# One chapter alone, e.g. `make check CHAPTER=fermi`: its build (only its own warnings are
# shown, and any fails), the unit tests of the topics its notebooks import, the layout tests,
# and the HTML and problems-edition tests on the partial build. The full check is `make test`.
check: install
	@test -n "$(CHAPTER)" || { echo "usage: make check CHAPTER=<name>, e.g. make check CHAPTER=fermi"; exit 2; }
	$(BIN)/python tools/build_chapter.py --check $(CHAPTER)

clean:
	rm -rf _build _build.previous _build.log

clean-venv:
	rm -rf .venv

.PHONY: help install chromium book problems pdf test sync format lint check clean clean-venv
