"""Data sources behind one interface: each yields `SourcedSample`s (or `DataError`s) in a fixed order.

The one place a new corpus format is added: write a `Source` subclass (base.py) and list it in `SOURCE_TYPES`.
"""
from .base import Source, SourceError, open_sources  # noqa: F401
