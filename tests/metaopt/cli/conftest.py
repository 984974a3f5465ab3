"""Shared stubs for CLI tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def peer_status(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """Make `metaopt peer status` read the given api.status answer instead of a live peer."""

    def answer(status: dict[str, Any]) -> None:
        class _Status:
            def __init__(self, data_dir: object) -> None: ...

            def call(self, op: str, body: object = None) -> object:
                return status

        monkeypatch.setattr("metaopt.cli._peer.LocalPeer", _Status)

    return answer
