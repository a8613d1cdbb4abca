# Every target builds what it needs; `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTO_FILES := $(shell find protos -name '*.proto')

.PHONY: venv glance-venv nginx proto proto-check lint test run bench bench-smoke chaos chaos-smoke clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@

venv: $(INSTALLED)

# Glance gets its own virtualenv (.state/glance-venv): its dependency tree never mixes with ours.
glance-venv:
	$(PYTHON) -m localglance install

# The benchmark's static upstream: Debian's nginx (nginx-light has the dav module for PUT uploads).
nginx:
	@if ! command -v nginx >/dev/null && ! test -x /usr/sbin/nginx; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; \
	fi

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# Regenerates generated/ from protos/ (messages, gRPC stubs and their .pyi type stubs).
proto: $(INSTALLED)
	rm -rf generated/glance
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=generated --grpc_python_out=generated \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=generated \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=generated \
		$(PROTO_FILES)
	@# protoc writes imports relative to protos/; the code lives in the `generated` package.
	find generated/glance -name '*.py*' -exec sed -i 's/^from glance\./from generated.glance./' {} +
	for d in $$(find generated -type d); do touch $$d/__init__.py; done

# Fails when generated/ does not match protos/.
proto-check: proto
	@test -z "$$(git status --porcelain -- generated)" || { git status --short -- generated; echo 'generated/ is stale: run make proto and commit'; exit 1; }

# Fails when protos/ (as in the working tree) breaks the contract of the previous commit: buf's FILE rules
# (buf.yaml). Another baseline: make proto-breaking AGAINST='.git#branch=main'.
AGAINST ?= .git\#ref=HEAD~1
.PHONY: proto-breaking
proto-breaking: $(BUF)
	@# A shallow checkout has no HEAD~1: deepen it by one commit; with no remote to ask, say so and skip.
	@if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then git fetch -q --deepen=1 2>/dev/null || true; fi
	@if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then \
		$(BUF) breaking --against '$(AGAINST)'; \
	else echo 'proto-breaking: WARNING: no previous commit to compare with (a shallow clone without a remote); skipped'; fi

lint: $(INSTALLED) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict gateway
	MYPYPATH=tests $(BIN)/mypy --strict localglance scripts tests bench harness chaos
	$(BUF) lint

test: $(INSTALLED) glance-venv nginx
	$(BIN)/pytest

# A real local Glance on 127.0.0.1:9292 (data kept in .state/) and the gateway on 50051; Ctrl-C stops both.
run: $(INSTALLED) glance-venv
	$(BIN)/python scripts/run_local.py --gateway-port 50051 --glance-port 9292

# The gateway against direct REST calls to a real Glance and to nginx, as ratios from the same run: prints
# the table and writes bench/results/ (bench.json, bench.md, throughput.png). Takes several minutes.
bench: $(INSTALLED) glance-venv nginx
	$(BIN)/python -m bench

# The same with tiny sizes, in seconds, into bench/results/tmp/ (CI runs it so the harness never rots).
bench-smoke: $(INSTALLED) glance-venv nginx
	$(BIN)/python -m bench --smoke

# Faults and abuse against the gateway (a real process) in front of a real Glance: cancelled transfers, Glance or
# the gateway killed mid-transfer, junk, sustained load, overload, stalled clients. Prints the table and writes
# chaos/results/ (chaos.md, chaos.json); exits non-zero when a scenario fails. About 8 to 10 minutes.
chaos: $(INSTALLED) glance-venv
	$(BIN)/python -m chaos

# Every scenario scaled down, under 3 minutes, into chaos/results/tmp/ (CI runs it).
chaos-smoke: $(INSTALLED) glance-venv
	$(BIN)/python -m chaos --smoke

clean:
	rm -rf $(VENV) node_modules .state .mypy_cache .ruff_cache .pytest_cache
