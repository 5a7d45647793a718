"""Shared fixtures. The Prefect harness is opt-in: most tests need no Prefect server."""

import os

# Quiet Prefect; must happen before anything imports prefect.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """A throw-away Prefect server and database for the whole session (≈ 10–12 s, once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def pytest_configure(config):
    # openstacksdk warns about its optional InfluxDB support on every cloud config it builds.
    config.addinivalue_line("filterwarnings", "ignore:Support for InfluxDB:Warning")
