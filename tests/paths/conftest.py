"""Fixtures for the paths tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nets_testlib import single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield
