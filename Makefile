# The project's front door. `make demo` runs the main job on the embedded `local` profile;
# `make test` starts the real servers and runs the whole suite against both profiles.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: consumers install demo features test test-local services-up services-down services-status lint bench clean serve bento
.PHONY: monitor tools

# constraints.txt pins every transitive package to the set the tests ran with.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[batch,dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

demo: install
	$(BIN)/recsys --profile local demo

# Every report (drift, quality, skew, each experiment), then the index page data_dir/reports/index.html;
# exits 1 when a report is past its thresholds (the page is written either way).
monitor: install
	$(BIN)/recsys --profile $(PROFILE) monitor all

# Rebuild the feature tables from the lake, apply the Feast repository and materialize (PROFILE=services for Redis).
PROFILE ?= local
features: install
	$(BIN)/recsys --profile $(PROFILE) build-features
	$(BIN)/recsys --profile $(PROFILE) feast-apply
	$(BIN)/recsys --profile $(PROFILE) materialize

# The API as production hosts it: `bentoml serve` of bento_services.service on serving.host:port (PROFILE=services
# for the real servers). `bento` builds the Bento (service, packages, ranker and candidate models).
serve: install
	RECSYS_PROFILE=$(PROFILE) $(BIN)/python -m bento_services serve

# The streaming consumers of interaction-events on Kafka (services profile), one process each, beside `make serve
# PROFILE=services`; in `local` they run inside the API. `recsys consume --status` prints each group's lag.
consumers: install
	$(BIN)/recsys --profile services consume

bento: install
	RECSYS_PROFILE=$(PROFILE) $(BIN)/python -m bento_services build

services-up: install
	bash infra/services.sh up

services-down:
	bash infra/services.sh down

services-status:
	bash infra/services.sh status

# The three-node Kafka cluster (KRaft, replication factor 3, min.insync.replicas 2) of the failover mitigation,
# on 127.0.0.1:29192,29194,29196; `bash infra/kafka_cluster.sh kill-node N|start-node N` to rehearse a failover.
.PHONY: kafka-cluster-up kafka-cluster-down
kafka-cluster-up: install
	bash infra/kafka_cluster.sh start

kafka-cluster-down:
	bash infra/kafka_cluster.sh stop

# The tools the tests drive besides the servers: headless Chromium (screenshots of the HTML reports) and promtool
# (the Prometheus alert rules), from Debian's packages, installed once.
tools:
	bash infra/browser.sh
	bash infra/promtool.sh

test: install services-up tools
	$(BIN)/pytest -ra

test-local: install tools
	$(BIN)/pytest -ra -m "not services"

# Style and types, the layers (import-linter: imports run downwards only) and declared vs imported (deptry).
lint: install
	$(BIN)/ruff check recsys ingestion training embeddings bento_services monitoring workflow cli tests bench
	$(BIN)/mypy recsys ingestion training embeddings bento_services monitoring workflow cli
	$(BIN)/lint-imports
	$(BIN)/deptry .

bench: install services-up
	$(BIN)/python -m bench.import_throughput
	$(BIN)/python -m bench.generator_throughput
	$(BIN)/python -m bench.materialize_throughput
	$(BIN)/python -m bench.online_latency
	$(BIN)/python -m bench.bentoml_overhead
	$(BIN)/python -m bench.serving_latency --world small
	$(BIN)/python -m bench.streaming_throughput
	$(BIN)/python -m bench.click_latency
	$(BIN)/python -m bench.experiment_validation

clean:
	bash infra/services.sh down || true
	bash infra/kafka_cluster.sh stop || true
	rm -rf var
