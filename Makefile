# The two commands of the README:   make reports   (run every notebook on the sample into reports/)
#                                    make test      (the test suite)
# Both create the virtual environment .venv on first use. Pass extra arguments with ARGS="...".
# make demo: the case-study demo as a web page (Voilà serves notebooks/demo.ipynb on http://localhost:8866).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tvomner-installed
# notebooks (make reports) and test workers (make test) at a time: one per CPU core, at most 2
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -ge 2 ] && echo 2 || echo 1)

# The data root (TVOMNER_DATA, default data/ here, git-ignored): `make data` links it to the benchmark
# files beside this checkout when they exist (DATA=/path/to/data for another folder).
DATA   ?= ../shared/data

.PHONY: install reports test browser-check demo kernel sample clean-cache data
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name tvomner --display-name "Python (tvomner)" >/dev/null
	@touch $(STAMP)

reports: $(STAMP)
	$(BIN)/python -m tvolib.reports --jobs $(JOBS) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist worksteal --durations=15 $(ARGS)

# notebook 06 in JupyterLab, its HTML copy and the Voilà demo page, in headless Chromium (installs chromium and playwright)
browser-check: $(STAMP)
	bash tests/browser/run.sh $(ARGS)

# the case-study demo page: open any checkpoint folder in it (?checkpoint=FOLDER in the address opens one first)
demo: $(STAMP)
	$(BIN)/voila notebooks/demo.ipynb --port=8866 --no-browser $(ARGS)

data:
	@if [ -e data ]; then echo "data/ exists: $$(readlink -f data)"; \
	elif [ -d "$(DATA)" ]; then ln -s "$$(cd "$(DATA)" && pwd)" data && echo "data -> $(DATA)"; \
	else echo "no $(DATA): set DATA=/path/to/data (folders twitter2015/, twitter2017/, kb/, llm_knowledge/, captions/)"; fi

sample: $(STAMP)
	$(BIN)/python -m tvolib.sample.make_sample

clean-cache:
	rm -rf cache/sample
