"""The OFAv2 elastic supernet, its presets and plain-module materialisation.

The names below load on first use (PEP 562), so that ``natv2.supernet.config`` (the presets,
which the torch-free cost model reads) can be imported without importing torch.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from natv2.lazy import lazy_names

if TYPE_CHECKING:
    from natv2.supernet.config import SupernetConfig, config_for_encoding, encoding_of
    from natv2.supernet.materialize import load_subnet, materialize, save_subnet
    from natv2.supernet.network import OFAv2Supernet, build_supernet
    from natv2.supernet.plain import Subnet

#: public name -> the submodule that defines it
_HOMES = {
    "OFAv2Supernet": "network",
    "Subnet": "plain",
    "SupernetConfig": "config",
    "build_supernet": "network",
    "config_for_encoding": "config",
    "encoding_of": "config",
    "load_subnet": "materialize",
    "materialize": "materialize",
    "save_subnet": "materialize",
}

__all__ = [
    "OFAv2Supernet",
    "Subnet",
    "SupernetConfig",
    "build_supernet",
    "config_for_encoding",
    "encoding_of",
    "load_subnet",
    "materialize",
    "save_subnet",
]


__getattr__, __dir__ = lazy_names(__name__, _HOMES)


class _Package(ModuleType):
    """Keeps the function ``materialize`` the package's attribute: importing the submodule of
    the same name would otherwise bind the module over it (the eager imports used to rebind it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOMES and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
