"""pytest-soap: a performance gate for pytest. See README.md."""

__version__ = "0.1.0"
