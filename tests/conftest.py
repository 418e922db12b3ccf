"""Shared fixtures: every test must leave no thread or open port behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

# pylon's camera emulation must be enabled before pypylon is imported anywhere.
os.environ.setdefault("PYLON_CAMEMU", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run tests that need a real rig")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real rig; run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def command_log_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The commands' log file (pipeline.cli_support.log_file) in a temporary folder, not $HOME."""
    os.environ.setdefault("COINRIG_LOG", str(tmp_path_factory.mktemp("log") / "rig.log"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch (and BLAS, e.g. k-means) on one thread for the test.

    Two cores shared by many processes: a second intra-op thread only waits for a core (a 6×
    slowdown measured under load), so the small models of the tests run on one.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon or emulator threads running."""
    before = set(threading.enumerate())
    yield
    leaked: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=2.0)
        if thread.is_alive() and not thread.name.startswith(("asyncio", "ThreadPoolExecutor")):
            leaked.append(thread)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"
