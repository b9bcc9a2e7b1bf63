"""Packages whose public names load on first use (PEP 562).

``natv2.supernet`` and ``natv2.data`` re-export names from submodules that import torch, while
torch-free code (the cost model, the CLI's start-up, the dataset registry) imports siblings of
those submodules. Loading each name when it is first read keeps those imports torch-free.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, whose public names
    live in the submodules ``homes`` maps them to (name -> submodule, relative)."""

    def getattr_(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{homes[name]}"), name)

    def dir_() -> list[str]:
        return sorted([*vars(sys.modules[package]), *homes])

    return getattr_, dir_
