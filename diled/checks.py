"""The check every config reader shares: keys that are not known are an error that names them and the
valid ones (used by the library's configs and, through it, the platform's)."""

from __future__ import annotations

from typing import Iterable


def check_keys(given: Iterable[str], valid: Iterable[str], what: str, where: str = "",
               error: type[Exception] = ValueError) -> None:
    """``error`` ("unknown <what> [...] <where>; valid: [...]") if ``given`` has keys outside ``valid``."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise error(f"unknown {what} {unknown}{' ' + where if where else ''}; valid: {valid}")
