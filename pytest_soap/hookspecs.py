"""Hooks pytest-soap adds to pytest, for other plugins and conftest files to implement.

pytest collects a hook implementation only when its name starts with `pytest_`, so every hook here has
that prefix.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_soap_model_provider(config: pytest.Config) -> Any:
    """Return the model backend the SOAP loop should ask, or None to leave the choice to others.

    A provider is any object with
    ``complete(system, cached_context, prompt, model, max_tokens) -> pytest_soap.soap.llm.ModelReply``
    that raises ``pytest_soap.soap.llm.ModelError`` with a one-line message when it cannot answer.
    The first non-None answer wins; when no plugin answers, the Anthropic API is used if
    ANTHROPIC_API_KEY is set. To use another backend without forking, define in a conftest.py
    (or a plugin module)::

        def pytest_soap_model_provider(config):
            return MyProvider()
    """


def register_hookspecs(pluginmanager: pytest.PytestPluginManager) -> None:
    """Called from pytest_addhooks: makes the hooks above known to pytest."""
    pluginmanager.add_hookspecs(sys.modules[__name__])
