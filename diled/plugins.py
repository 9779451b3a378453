"""Finding a class that a config names by import path, ``"package.module:ClassName"``: how codecs (and, on the
platform, data types) defined outside this repository are found in every process that reads the config."""

from __future__ import annotations

import importlib


def import_class(reference: str, base: type, kind: str) -> type:
    """The class at ``reference`` ("package.module:ClassName"), checked to subclass ``base``; a
    ``ValueError`` naming ``kind`` and the reference if it cannot be imported or is something else."""
    module, _, attr = reference.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{kind} {reference!r}: cannot import {attr} from {module} ({e}); "
                         f"is its folder on PYTHONPATH?") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{kind} {reference!r} is not a {base.__name__} subclass")
    return cls
