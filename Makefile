# apo_ros — two commands: `make demo` and `make test`. Each builds .venv on first use.
PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
# torch==2.13.0 is the CPU build; GPU users: make TORCH_SPEC="torch==2.13.0 --index-url ..." test
TORCH_SPEC ?= torch==2.13.0
# Real ROS 2 Jazzy rclpy (Fast DDS) and the standard messages from the package index: no ROS
# install needed. On a ROS machine whose rclpy comes from apt: make ROS_SPEC= test
ROS_SPEC   ?= "ros-jazzy-rclpy[fastrtps]==7.1.6" ros-jazzy-std-msgs==5.3.6 \
              ros-jazzy-sensor-msgs==5.3.6 ros-jazzy-geometry-msgs==5.3.6 \
              ros-jazzy-std-srvs==5.3.6 ros-jazzy-diagnostic-msgs==5.3.6 \
              ros-jazzy-rosgraph-msgs==2.0.3
STAMP      := $(VENV)/.apo_ros-installed
# the tested version of every dependency; regenerate with `make constraints` after changing setup.py
CONSTRAINTS := constraints.txt
DEMO_ARGS  ?=
PYTEST_ARGS ?=
export MUJOCO_GL ?= egl

OPENPI_VENV := .venv-openpi-client

.PHONY: demo study test test-fast lint typecheck-nodes venv constraints openpi-client-venv clean help

help:
	@echo "make demo   - set up .venv and run the correction flywheel on the simulator (apo-ros demo)"
	@echo "make study  - the powered two-task method comparison (apo-ros demo --full; hours of CPU)"
	@echo "make test   - set up .venv, then ruff, the static check of the ROS nodes, and pytest"
	@echo "make test-fast - ruff and the tests not marked slow (no ROS graphs, servers or demo study)"

venv: $(STAMP)

$(STAMP): setup.py Makefile $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev]" $(ROS_SPEC)
	@# rclpy-intellisense (once in the dev extra) overwrites the real rclpy's files: remove it and
	@# reinstall the real one over what the removal deleted.
	@if $(BIN)/python -m pip show -q rclpy-intellisense 2>/dev/null; then \
	  $(BIN)/python -m pip uninstall -q -y rclpy-intellisense && \
	  $(BIN)/python -m pip install -q --force-reinstall --no-deps \
	    "ros-rclpy==$$($(BIN)/python -m pip show ros-rclpy | sed -n 's/^Version: //p')"; fi
	@touch $@

# pin what .venv holds now: every distribution pip installed (not the metadata that the ROS wheels
# carry inside them), torch excepted (TORCH_SPEC pins it)
constraints: $(STAMP)
	@(sed -n '1,3p' $(CONSTRAINTS); $(BIN)/python -c 'import importlib.metadata as m; \
	  skip = {"torch", "apo_ros", "apo-ros", "pip", "setuptools", "wheel"}; \
	  pins = {d.metadata["Name"] + "==" + d.version for d in m.distributions() \
	          if (d.read_text("INSTALLER") or "").strip() == "pip" and d.metadata["Name"].lower() not in skip}; \
	  print("\n".join(sorted(pins, key=str.lower)))') > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

demo: $(STAMP)
	$(BIN)/apo-ros demo $(DEMO_ARGS)

# the powered two-task comparison behind the README's results (resumable: rerun to continue)
study: $(STAMP)
	$(BIN)/apo-ros demo --full $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check apo_ros test launch setup.py

# mypy checks the nodes against the real rclpy (it ships py.typed) and the message packages.
typecheck-nodes: $(STAMP)
	$(BIN)/mypy --config-file mypy-nodes.ini apo_ros/nodes

# openpi's client pins numpy < 2, so the test that drives `apo-ros serve` with it gets its own
# venv. Offline (no package index, nothing cached) it cannot be built: the reason goes into
# $(OPENPI_VENV).failed, the test skips naming it, and the rest of the suite still runs.
openpi-client-venv: $(OPENPI_VENV)/.installed

$(OPENPI_VENV)/.installed: test/openpi_client_requirements.txt
	@rm -rf $(OPENPI_VENV) $(OPENPI_VENV).failed
	@if $(PYTHON) -m venv $(OPENPI_VENV) > $(OPENPI_VENV).log 2>&1 && \
	   $(OPENPI_VENV)/bin/python -m pip install -q -r $< >> $(OPENPI_VENV).log 2>&1; then \
	   touch $@; rm -f $(OPENPI_VENV).log; \
	 else \
	   echo "pip install -r $< failed (see $(OPENPI_VENV).log)" > $(OPENPI_VENV).failed; \
	   echo "warning: cannot build $(OPENPI_VENV); the openpi-client test will skip"; \
	 fi

test: lint typecheck-nodes openpi-client-venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS) test

# the edit-test loop: everything but the tests marked slow (real ROS graphs, servers, the demo
# study end to end); `make test` still runs them all
test-fast: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS) test

clean:
	rm -rf $(VENV) $(OPENPI_VENV) $(OPENPI_VENV).failed $(OPENPI_VENV).log .pytest_cache .ruff_cache .mypy_cache
