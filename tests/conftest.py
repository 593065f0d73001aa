"""Root of the test suite: its folder is on ``sys.path``, so tests import ``nets_testlib``."""

from typing import Any


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is available."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
