"""Classifiers for the transports: the default rules and a builder for others.

A classifier is `(request, response | None, exception | None) -> bool | None`:
True = failure, False = success, None = ignore.
"""

from ._classify import (
    DEFAULT_FAILURE_STATUSES,
    NOT_THE_HOSTS_FAULT,
    Classifier,
    default_classifier,
    from_cache,
    make_classifier,
)
from ._keys import default_key
from ._transport import parse_retry_after

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "NOT_THE_HOSTS_FAULT",
    "Classifier",
    "default_classifier",
    "default_key",
    "from_cache",
    "make_classifier",
    "parse_retry_after",
]
