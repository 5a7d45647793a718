"""Keep raw secrets out of validation errors.

Pydantic records each rejected input in the error (``errors()``, ``json()``); wrapping secret
fields in ``SecretStr`` before validation means a rejected key or password is recorded masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr


def wrap_secrets(data: Any, fields: Iterable[str]) -> Any:
    if not isinstance(data, dict):
        return data
    wrapped = dict(data)
    for name in fields:
        if isinstance(wrapped.get(name), str):
            wrapped[name] = SecretStr(wrapped[name])
    return wrapped
