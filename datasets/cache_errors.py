"""The errors of prepared caches: one family, so a caller catches every cache problem at once."""

from __future__ import annotations

from pebench.datasets.formats import DatasetError


class CacheError(DatasetError):
    """A cache that does not match its task spec or manifest (names task, split, difference)."""


class CacheMissingError(CacheError):
    """No prepared cache for a task at this image size; the message says what to run."""


class ManifestError(CacheError):
    """A ``manifest.json`` that cannot be read, is not JSON or has fields of the wrong type."""
