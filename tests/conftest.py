"""Shared fixtures."""

from __future__ import annotations

import pytest

from instrumented_clients.testing import CapturedTelemetry, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telemetry() -> CapturedTelemetry:
    return CapturedTelemetry()
