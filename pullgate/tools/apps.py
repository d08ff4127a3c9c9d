"""Loads a service's application factory from the import path the topology gives it."""

from __future__ import annotations

import importlib

from pullgate import topology
from pullgate.serving import App


def load_app(name: str) -> App:
    """The `App` of service `name` (UnknownService for a name the topology does not know)."""
    module, _, attribute = topology.service(name).app.partition(":")
    app: App = getattr(importlib.import_module(module), attribute)
    return app


__all__ = ["load_app"]
