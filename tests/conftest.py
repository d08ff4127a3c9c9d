"""Suite-wide rules and fixtures: under CI=true a skipped test is a failure (CI must have every tool and server the
tests use); a PostgreSQL server for the session and fresh databases per test."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from tests.postgres import Databases, Server, find_server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Turn a skip into a failure that names its reason when CI=true: a skip there means CI tested less."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI", "").lower() == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server | str]:
    """The PostgreSQL server of the session (tests/postgres.py says where it comes from), or why there is none."""
    with find_server() as found:
        yield found


@pytest.fixture
def postgres(postgres_server: Server | str) -> Iterator[Databases]:
    """Fresh PostgreSQL databases for one test, dropped after it; the test is skipped without a server."""
    if isinstance(postgres_server, str):
        pytest.skip(postgres_server)
    databases = Databases(postgres_server)
    try:
        yield databases
    finally:
        databases.drop_all()
