"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread and a fixed seed: tests run two at a time on two cores (pytest -n 2), and
    results must not depend on the order tests ran in."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
