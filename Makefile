# Two commands matter (see README.md): `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# bcc's Python module comes from Debian (python3-bpfcc), so the venv is made from Debian's python3
# with its site packages visible.
SYSTEM_PYTHON := /usr/bin/python3
CLANG ?= clang-14
LLVM_STRIP ?= llvm-strip-14
BPF_SRC := bpf/recorder.bpf.c
BPF_OBJ := bpf/recorder.bpf.o
RESIDENT_SRC := bpf/resident.bpf.c
RESIDENT_OBJ := bpf/resident.bpf.o

.PHONY: run test setup venv dev kube bpf lint bench clean

setup: $(VENV)/.installed
	@bash scripts/setup-node.sh

$(VENV)/.installed: pyproject.toml constraints.txt
	@bash scripts/setup-node.sh
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' --config-settings editable_mode=strict
	touch $@

venv: $(VENV)/.installed

# The main job on a built-in example: record a busybox workload, enforce the profile in a runc
# container, show that the workload runs and that another command is denied; then the hook end to end
# (install-hook, a podman container recorded through hooks.d, its denial enriched with its pod).
run: setup
	$(VENV)/bin/syscribe demo

# The editable install is a tree of links (strict mode), so that mypy sees the package as installed;
# a new module needs it made again, which takes a second.
dev: venv
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . --config-settings editable_mode=strict

# The real kube-apiserver and etcd the Kubernetes tests run against: built once per machine (needs
# Go 1.26+; 10-20 min cold) into ~/.cache/syscribe/kube, reused afterwards. Not part of `setup`, so
# that `make run` does not wait for it. A failed build fails under SYSCRIBE_REQUIRE_REAL=1 (CI);
# elsewhere the Kubernetes tests skip, saying why.
kube:
	@bash scripts/build-kube.sh || { [ "$$SYSCRIBE_REQUIRE_REAL" != 1 ] && echo "build-kube: the Kubernetes tests will skip"; }

test: setup dev kube
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Rebuild the CO-RE object from its source. The object is committed so that nodes need no clang;
# tests/test_bpf_object.py checks that the committed object is what this rule builds.
bpf:
	bash scripts/build-bpf.sh $(BPF_SRC) $(BPF_OBJ)
	bash scripts/build-bpf.sh $(RESIDENT_SRC) $(RESIDENT_OBJ)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
