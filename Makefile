# defocus_lit: `make install` once (a no-op when done), then `make test`, `make train EXP=patch_mask`, `make demo`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
CLI     := $(VENV)/bin/defocus-lit
EXP     ?= patch_mask
SWEEP   ?= lr_lambda
ARGS    ?=

.PHONY: install lint test train data sweep bench demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,onnx,demo]'
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install
	$(PY) -m pytest $(ARGS)

train: install
	$(CLI) train $(EXP) $(ARGS)

data: install
	$(CLI) data build --source synthetic --out data/synthetic.h5 $(ARGS)

sweep: install
	$(CLI) sweep experiments/sweeps/$(SWEEP).yaml $(ARGS)

demo: install
	$(CLI) demo $(ARGS)

bench: install
	mkdir -p outputs && $(CLI) bench --json outputs/bench.json $(ARGS)

clean:
	rm -rf outputs lightning_logs wandb .pytest_cache
