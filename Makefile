# Satchel: `make run` starts the local stack, `make test` runs every check and test.
# Both create the virtual environment in .venv on first use (Python 3.11).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv node-tools run test test-fast lint typecheck suite docs docs-serve clean package deploy diagram integration bench

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# The OpenAPI document's npm tools (Spectral, Redocly CLI, openapi-typescript, tsc: tools/node/package.json),
# installed as package-lock.json pins them; tests/e2e/test_generated_clients.py runs them.
NODE_TOOLS := tools/node/node_modules/.installed-$(shell cat tools/node/package-lock.json | cksum | cut -d' ' -f1)

$(NODE_TOOLS): tools/node/package.json tools/node/package-lock.json
	cd tools/node && npm ci --no-audit --no-fund --ignore-scripts
	touch $(NODE_TOOLS)

node-tools: $(NODE_TOOLS)

# The API's and the emulator's ports: `make run PORT=8080 MOTO_PORT=5050` (0: any free one;
# .satchel-local.json says which). `make run AUTH=oidc`: callers sign in with tokens of a
# demo OIDC issuer on ISSUER_PORT instead of API keys (docs/sign-in.md, "Try it locally").
PORT ?= 8000
MOTO_PORT ?= 5000
AUTH ?= keys
ISSUER_PORT ?= 8002

run: venv
	$(BIN)/python -m satchel_local --port $(PORT) --moto-port $(MOTO_PORT) --auth $(AUTH) --issuer-port $(ISSUER_PORT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The tests are in tiers (docs/development.md): test-fast runs the unit tier alone (no
# emulator); suite runs every tier: unit, stack, e2e and deploy (tests/integration is
# deselected unless a deployed stage is configured: `make integration`).
# Both run the tests in WORKERS processes at once (pytest-xdist; `make suite WORKERS=0` runs
# them in this one). 2: the cores of these machines (`-n auto` finds the same number here);
# docs/development.md says how tests are spread and how to keep two apart.
WORKERS ?= 2

test-fast: venv
	$(BIN)/pytest -n $(WORKERS) tests/unit

suite: venv node-tools
	$(BIN)/pytest -n $(WORKERS)

# The manual (docs/, mkdocs.yml), built as the site is, into build/site: --strict fails on a
# broken link, a missing example file or a page left out of the nav.
docs: venv
	NO_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet

# Serves the manual on 127.0.0.1:8001 (the API has 8000), rebuilt on every save.
docs-serve: venv
	NO_MKDOCS_2_WARNING=true $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

test: lint typecheck docs suite

# --- Deployment (docs/deploy.md) ---------------------------------------------------
# STAGE is the Chalice stage in .chalice/config.json; the stack is named satchel-<STAGE>.
STAGE ?= prod
STACK ?= satchel-$(STAGE)
DEPLOY_BUCKET ?=
PARAMS ?=
export PARAMS  # handed to the shell as is: JSON values keep their quotes (no spaces in them)

# build/sam.json + build/deployment.zip (what deploy uploads) and build/cloudformation.json
# (the same, expanded from SAM offline); cfn-lint checks both. No AWS account needed.
package: venv
	$(BIN)/python -m scripts.package --stage $(STAGE) --out build
	$(BIN)/cfn-lint build/sam.json build/cloudformation.json

# Needs the AWS CLI, credentials, and DEPLOY_BUCKET: an S3 bucket in the stack's region
# for the code. PARAMS: template parameters, e.g. PARAMS="AlarmEmail=ops@example.com".
deploy: package
	@test -n "$(DEPLOY_BUCKET)" || { echo "make deploy: set DEPLOY_BUCKET=<an S3 bucket for the code>" >&2; exit 2; }
	@command -v aws >/dev/null || { echo "make deploy: the AWS CLI (aws) is not installed" >&2; exit 2; }
	aws cloudformation package --template-file build/sam.json --s3-bucket $(DEPLOY_BUCKET) \
		--s3-prefix $(STACK) --use-json --output-template-file build/packaged.json
	set -f; aws cloudformation deploy --template-file build/packaged.json --stack-name $(STACK) \
		--s3-bucket $(DEPLOY_BUCKET) --s3-prefix $(STACK) --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
		--no-fail-on-empty-changeset $(if $(PARAMS),--parameter-overrides $$PARAMS)
	aws cloudformation describe-stacks --stack-name $(STACK) --query 'Stacks[0].Outputs' --output table

# The manual's state machine diagram (docs/architecture.md), redrawn from statemachine/download.asl.json.
diagram: venv
	$(BIN)/python -m scripts.asl_to_mermaid --write

# Against a deployed stage: SATCHEL_INTEGRATION_URL, SATCHEL_INTEGRATION_KEY (docs/deploy.md).
integration: venv
	$(BIN)/pytest tests/integration

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build .satchel-local.json tools/node/node_modules

# Zip throughput, memory and worker traffic against the local emulator (docs/performance.md).
# Not part of `make test`: it moves about 3 GiB through moto and takes a few minutes.
bench: venv
	$(BIN)/python -m bench.zips
