"""Under CI=true a skipped test fails, naming why it skipped; elsewhere it stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize(("ci", "outcome"), [("true", {"failed": 1}), ("", {"skipped": 1})])
def test_a_skip_fails_only_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str,
                                    outcome: dict[str, int]) -> None:
    """The suite's rule, run on a test that skips: a failure under CI=true, a skip otherwise."""
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("import pytest\ndef test_needs_a_tool():\n    pytest.skip('no such tool')\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)
    if ci:
        result.stdout.fnmatch_lines(["*skipped under CI=true*no such tool*"])
