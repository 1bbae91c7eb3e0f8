# Packaging: a manylinux wheel built and repaired here, and checks that it (and
# the sdist) install and run on a PATH with no C compiler.
#   make wheel         dist/pktbench-*-manylinux*.whl (auditwheel-repaired)
#   make wheel-check   install that wheel in a fresh venv, no compiler, run an rr step
#   make sdist-check   install the sdist the same way: the pure-Python engine results
# Documentation made from the code (tests/test_docs.py checks both stay buildable):
#   make man           man/pktbench.1 from the click commands (installed as share/man/man1)
#   make api-docs      build/api/ HTML API reference from the docstrings (pdoc)
PYTHON ?= python3
CHECK_DIR ?= /tmp/pktbench-wheel-check
RR_STEP = run --workload rr --rate 20k --duration 2

API_DIR ?= build/api

.PHONY: wheel sdist wheel-check sdist-check clean man api-docs docs

wheel:
	rm -rf build/wheelhouse && mkdir -p dist
	PKTBENCH_REQUIRE_EXTENSION=1 $(PYTHON) -m build --wheel --outdir build/wheelhouse .
	$(PYTHON) -m auditwheel repair --wheel-dir dist build/wheelhouse/pktbench-*.whl
	@ls dist/pktbench-*manylinux*.whl

sdist:
	mkdir -p dist && $(PYTHON) -m build --sdist --outdir dist .

# The venv's own bin is the whole PATH: pip, python and pktbench, no cc.
define no_compiler
	env -u CC -u CXX PATH=$(1)/bin /bin/sh -c '! command -v cc && ! command -v gcc && ! command -v x86_64-linux-gnu-gcc' >/dev/null \
	    || { echo "a C compiler is reachable on the check PATH" >&2; exit 1; }
endef

wheel-check: wheel
	rm -rf $(CHECK_DIR)/wheel && $(PYTHON) -m venv $(CHECK_DIR)/wheel
	$(call no_compiler,$(CHECK_DIR)/wheel)
	cd $(CHECK_DIR) && env -u CC PATH=$(CHECK_DIR)/wheel/bin pip install -q --no-cache-dir --only-binary :all: \
	    $$(ls -t $(CURDIR)/dist/pktbench-*manylinux*.whl | head -1)
	cd $(CHECK_DIR) && env PATH=$(CHECK_DIR)/wheel/bin pktbench --version | tee $(CHECK_DIR)/wheel.version
	grep -q "engine: cython, compiled, .*manylinux" $(CHECK_DIR)/wheel.version
	cd $(CHECK_DIR) && env PATH=$(CHECK_DIR)/wheel/bin pktbench $(RR_STEP) --json $(CHECK_DIR)/wheel-rr.json
	@echo "wheel-check: passed"

sdist-check: sdist
	rm -rf $(CHECK_DIR)/sdist && $(PYTHON) -m venv $(CHECK_DIR)/sdist
	$(call no_compiler,$(CHECK_DIR)/sdist)
	cd $(CHECK_DIR) && env -u CC PATH=$(CHECK_DIR)/sdist/bin pip install -q --no-cache-dir \
	    $$(ls -t $(CURDIR)/dist/pktbench-*.tar.gz | head -1)
	cd $(CHECK_DIR) && env PATH=$(CHECK_DIR)/sdist/bin pktbench --version | tee $(CHECK_DIR)/sdist.version
	grep -q "engine: python, pure" $(CHECK_DIR)/sdist.version
	cd $(CHECK_DIR) && env PATH=$(CHECK_DIR)/sdist/bin pktbench $(RR_STEP) --json $(CHECK_DIR)/sdist-rr.json
	@echo "sdist-check: passed"

man:
	$(PYTHON) -m pktbench man > man/pktbench.1

api-docs:
	$(PYTHON) -m pktbench.apidoc $(API_DIR)
	@echo "API reference: $(API_DIR)/index.html"

docs: man api-docs

clean:
	rm -rf build dist $(CHECK_DIR)
