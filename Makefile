# FoodApp — `make help` lists the targets.
# Build output lives outside the clone so fresh clones (CI) reuse it.
CARGO_TARGET_DIR ?= $(HOME)/.cache/foodapp/target
export CARGO_TARGET_DIR
SERVICES := scripts/test-services

.DEFAULT_GOAL := help
.PHONY: help test lint fmt demo bench crds e2e sqlx

help: ## Show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-6s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

test: lint ## Every check: format, clippy, all tests, API fuzzing, chart and Dockerfile checks
	$(SERVICES) run -- sh -c 'cargo test --workspace --locked --no-fail-fast && python3 charts/check.py && scripts/fuzz-api && scripts/sqlx-prepare --check'
	python3 scripts/check-dockerfiles.py

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	cargo fmt --all

demo: ## Run the whole stack locally (http://127.0.0.1:8080, or DEMO_PORT)
	cargo build --locked --workspace --bins
	$(SERVICES) run -- scripts/demo

crds: ## Regenerate crds/, the chart's copies, its RBAC rules and the README's RBAC table from the code
	UPDATE_CRDS=1 cargo test --locked -p foodapp-operator --test crd crds_on_disk
	cargo run --locked -q -p foodapp-operator -- rbac > charts/foodapp-operator/files/rbac-rules.yaml
	cargo run --locked -q -p foodapp-operator -- rbac --leader-election > charts/foodapp-operator/files/leader-election-rules.yaml
	scripts/readme-rbac

sqlx: ## Refresh api/.sqlx, the query data the build checks the API's SQL against
	$(SERVICES) run -- scripts/sqlx-prepare

e2e: ## The operator on a real cluster (FOODAPP_E2E_KUBECONFIG; README: End-to-end tests)
	@if [ -z "$$FOODAPP_E2E_KUBECONFIG" ]; then \
		echo "make e2e: SKIPPED: FOODAPP_E2E_KUBECONFIG is not set (README: End-to-end tests)"; exit 0; fi
	$(SERVICES) install
	cargo test --locked -p foodapp-operator --test e2e -- --ignored --nocapture --test-threads=1 $(E2E_TEST)

bench: ## Benchmarks against release builds (figures go in the README)
	cargo build --locked --release -p foodapp-api -p foodapp-operator
	NEED_WRK=1 PG_FSYNC=on $(SERVICES) run -- sh -c 'bench/run && bench/backup && bench/restore'
	cargo bench --locked -p foodapp-operator --bench reconcile_memory
