# The course's two commands:  `make course` (launch JupyterLab) and `make test` (run every test);
# for contributors, `make check`: the quick tier (unit tests, under 2 minutes on 2 cores).
# Both create the virtual environment .venv the first time (and refresh it when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
# The torch release the course is tested with; any torch>=2.1 works: make course TORCH='torch>=2.1'
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: course test check test-other-arithmetic lint mutation install clean workshop workshop-all site assignments slides

# JupyterLab refuses to run as root unless told (containers, CI machines)
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

course: $(VENV)/.installed
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the quick tier while you work: unit tests only -- no notebook runs, no browser, no training that compares
# outcomes, no long runs (markers in pyproject.toml); `make test` (what CI runs) is still the whole suite
check: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not notebook and not browser and not outcome and not slow" --durations=10 $(PYTEST_ARGS)

# the tests that train and compare (marker `outcome`), again under another arithmetic: torch's generic
# kernels instead of this CPU's vector units, on one thread. CI runs it after `make test`: a claim about
# learning must hold on any CPU, not only where it was measured.
test-other-arithmetic: $(VENV)/.installed
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m outcome $(PYTEST_ARGS)

# the linter (config in pyproject.toml, notebooks included); CI runs it before the tests
lint: $(VENV)/.installed
	$(BIN)/ruff check .

# mutation testing of the core (config: [tool.mutmut] in pyproject.toml): do the fast tests catch small
# changes to the formulas (losses, metrics, the sampler and the learning-rate step)? About 20 minutes on one
# core, so not part of `make test`; docs/design.md keeps the score and the survivors we accept.
# `make mutation MUTANTS='elm_lite.losses.*'` widens it; `$(BIN)/mutmut show NAME` shows one mutant.
MUTANTS ?= $(foreach f,supcon_terms contrastive_terms positive_terms centroid_terms log_sum_exp_without_each average_anchors \
	logit_adjustment ldam_margins embedding_margins xǁLogitAdjustedLossǁforward xǁLDAMLossǁforward,elm_lite.losses.*$(f)__mutmut_*) \
	elm_lite.metrics.x_balanced_accuracy__* elm_lite.metrics.x_embedding_margin__* \
	elm_lite.train.xǁEpochSamplerǁorder__* elm_lite.train.x_start_epoch__* elm_lite.engine.loop.x_set_learning_rate__*
mutation: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 1 $(foreach m,$(MUTANTS),'$(m)')
	$(BIN)/mutmut results

# workshop mode: the one-page dashboard (code hidden, every slider precomputed), for a presenter;
# `make workshop-all` serves every notebook as an app instead
workshop: $(VENV)/.installed
	$(BIN)/voila notebooks/workshop.ipynb

workshop-all: $(VENV)/.installed
	$(BIN)/voila notebooks/ --no-browser

# the course as a static web site in site/ (open site/index.html): every notebook executed, with sliders
# that work without a kernel, the docs, search; SMOKE=1 for quick sizes
site: $(VENV)/.installed
	$(BIN)/python tools/build_site.py $(if $(SMOKE),--smoke)

# the nbgrader assignments (one per lesson with exercises, and the capstone): assignments/source/ (the
# instructor's versions, with solutions) and assignments/release/ (the student versions to hand out);
# assignments/ is an nbgrader course directory (docs/teachers.md: running it on JupyterHub)
assignments: $(VENV)/.installed
	$(BIN)/python tools/make_assignments.py

# the workshop story as a reveal.js slide deck in slides/ (open slides/index.html; works offline: reveal.js
# and plotly.js are copied into the folder), figures from the dashboard's precomputed sweeps
slides: $(VENV)/.installed
	$(BIN)/python tools/make_slides.py

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "elm_lite needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[course,test,site]"
	touch $@

clean:
	rm -rf $(VENV)
