"""The README's table of resilience defaults says what the code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from resilience import DownstreamConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_default_in_the_readme_is_the_codes() -> None:
    """Each `key = value` the README's policy table gives is that policy's default, and every policy is there."""
    stated: dict[str, dict[str, str]] = {}
    for line in README.read_text().splitlines():
        cell = re.search(r"\| `(\w+)`: (.*) \|$", line)
        if cell:
            stated[cell.group(1)] = dict(re.findall(r"`(\w+) = ([^`]+)`", cell.group(2)))
    defaults = DownstreamConfig()
    assert set(stated) == {f.name for f in dataclasses.fields(defaults)}
    for table, values in stated.items():
        policy = getattr(defaults, table)
        for key, value in values.items():
            assert float(value) == getattr(policy, key), f"README says {table}.{key} = {value}"
