# The two commands of the README:   make reports   (run every notebook on the sample into reports/)
#                                    make test      (the test suite)
# Both create the virtual environment .venv on first use. Pass extra arguments with ARGS="...".
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tvomner-installed

.PHONY: install reports test browser-check kernel sample clean-cache
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name tvomner --display-name "Python (tvomner)" >/dev/null
	@touch $(STAMP)

reports: $(STAMP)
	$(BIN)/python -m tvolib.reports $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

# notebook 06 in JupyterLab and its HTML copy, in headless Chromium (installs chromium and playwright)
browser-check: $(STAMP)
	bash tests/browser/run.sh $(ARGS)

sample: $(STAMP)
	$(BIN)/python -m tvolib.sample.make_sample

clean-cache:
	rm -rf cache/sample
