"""Names a package exports, imported only when first used.

`ml` and its packages export their public names this way so that `from ml import Bundle` does
not import torch, and so that a package's `__init__` never imports its modules eagerly (which
would tie every module of a package to every other, and hide import circles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """`__getattr__` and `__all__` for `package`; `names` maps a public name to "module" or
    "module:attribute" (when the public name differs from the module's own)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)

    return __getattr__, sorted(names)
