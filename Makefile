# apo_ros — two commands: `make demo` and `make test`. Each builds .venv on first use.
PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
# torch==2.13.0 is the CPU build; GPU users: make TORCH_SPEC="torch==2.13.0 --index-url ..." test
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.apo_ros-installed
DEMO_ARGS  ?=
PYTEST_ARGS ?=
export MUJOCO_GL ?= egl

.PHONY: demo test lint typecheck-nodes venv clean help

help:
	@echo "make demo   - set up .venv and run the correction flywheel on the simulator (apo-ros demo)"
	@echo "make test   - set up .venv, then ruff, the static check of the ROS nodes, and pytest"

venv: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

demo: $(STAMP)
	$(BIN)/apo-ros demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check apo_ros test launch setup.py

# rclpy cannot be installed from PyPI: rclpy-intellisense ships its Python sources, which become
# a typed stub package so mypy checks every call the nodes make into rclpy.
.stubs/rclpy/py.typed: $(STAMP)
	@rm -rf .stubs && mkdir -p .stubs
	@cp -r "$$($(BIN)/python -c 'import importlib.util as u; print(u.find_spec("rclpy").submodule_search_locations[0])')" .stubs/rclpy
	@touch $@

typecheck-nodes: .stubs/rclpy/py.typed
	MYPYPATH=.stubs $(BIN)/mypy --config-file mypy-nodes.ini apo_ros/nodes

test: lint typecheck-nodes
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS) test

clean:
	rm -rf $(VENV) .stubs .pytest_cache .ruff_cache .mypy_cache
