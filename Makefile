# Strata: the two commands.
#   make test   install what is missing, build, run every test
#   make run    install what is missing, build, start Strata on ./data
SHELL := /bin/bash
.DEFAULT_GOAL := test

APT_PACKAGES := pkg-config librocksdb-dev liburing-dev libzstd-dev zlib1g-dev liblz4-dev libsnappy-dev libcurl4-openssl-dev curl mosquitto-clients mosquitto kcat openssl amqp-tools librabbitmq-dev gcc
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATA ?= ./data
SWIFT_TEST_FLAGS ?=

.PHONY: deps apt venv build build-release test run bench fuzz clean

deps: apt venv

# Debian's -dev packages for RocksDB, liburing, libcurl and the four Kafka codecs (zstd, zlib,
# lz4, snappy); the test peers (mosquitto, kcat) and openssl for the TLS tests' certificates.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# A Python venv inside the project for the third-party test clients.
venv: $(VENV)/.installed
$(VENV)/.installed: Tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r Tests/requirements.txt
	touch $@

build: apt
	swift build --build-tests

build-release: apt
	swift build -c release

test: deps build
	STRATA_BIN_DIR="$$(swift build --show-bin-path)" swift test --skip-build $(SWIFT_TEST_FLAGS)
	STRATA_BIN_DIR="$$(swift build --show-bin-path)" $(VENV)/bin/python -m pytest -q Tests/integration

# A single-node Strata: journal-node with every gateway that exists, data under $(DATA),
# journal protocol on 127.0.0.1:7450, HTTP (/metrics, /health, /admin) on 127.0.0.1:7451.
# The object tier is on when TIER_BUCKET (S3, with TIER_ENDPOINT and the AWS_* credentials) or
# TIER_WEBHDFS is set: make run TIER_ENDPOINT=http://127.0.0.1:9000 TIER_BUCKET=strata
TIER_ARGS = $(if $(TIER_BUCKET),--tier-bucket $(TIER_BUCKET) $(if $(TIER_ENDPOINT),--tier-endpoint $(TIER_ENDPOINT))) \
	$(if $(TIER_WEBHDFS),--tier-webhdfs $(TIER_WEBHDFS))
run: deps build-release
	mkdir -p $(DATA)
	"$$(swift build -c release --show-bin-path)/journal-node" --data-dir $(DATA) \
		--listen 127.0.0.1:7450 --http 127.0.0.1:7451 --gateways all \
		--mqtt-listen 127.0.0.1:1883 --mqtt-allow-anonymous --kafka-listen 127.0.0.1:9092 \
		--amqp-listen 127.0.0.1:5672 --amqp-allow-anonymous $(TIER_ARGS)

bench: build-release
	"$$(swift build -c release --show-bin-path)/storage-bench" append --seconds 10

# Coverage-guided fuzzing (libFuzzer + ASan), FUZZ_SECONDS long, of one target (FUZZ_TARGET:
# frames, batch, mqtt, kafka, journal or amqp; empty: all, picked by each input's first byte).
# Crashes are written to Fuzz/crashes/; turn each into a regression test. The kafka and journal
# targets keep one journal (and gateway) across inputs, so what they keep is no leak:
# LeakSanitizer is off for them.
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?=
fuzz: apt
	swift build -c release --scratch-path .build-fuzz --product journal-fuzz \
		-Xswiftc -sanitize=fuzzer,address -Xswiftc -DSTRATA_LIBFUZZER -Xswiftc -use-ld=lld
	mkdir -p Fuzz/corpus/$(or $(FUZZ_TARGET),all) Fuzz/crashes
	STRATA_FUZZ_TARGET=$(FUZZ_TARGET) $(if $(filter kafka journal,$(FUZZ_TARGET)),ASAN_OPTIONS=detect_leaks=0) "$$(swift build -c release --scratch-path .build-fuzz --show-bin-path)/journal-fuzz" \
		Fuzz/corpus/$(or $(FUZZ_TARGET),all) -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=Fuzz/crashes/ \
		$(if $(filter kafka journal,$(FUZZ_TARGET)),-detect_leaks=0)

clean:
	rm -rf .build $(VENV) $(DATA)
