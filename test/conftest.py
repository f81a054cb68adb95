"""Shared fixtures, and the xdist grouping the graph tests rely on."""

import pytest
import torch


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep `--dist loadgroup` grouping under pytest 9.2.

    pytest-xdist 3.8 groups tests by renaming them `<nodeid>@<group>`, through an attribute pytest
    9.2 no longer reads, so the `xdist_group` marks were silently ignored: the graph tests ran on
    both workers at once, out of order, with one graph each. Rename them the way pytest 9 does.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture
def one_thread():
    """One torch thread and a fixed seed: tests run two at a time on two cores (pytest -n 2), and
    results must not depend on the order tests ran in."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
