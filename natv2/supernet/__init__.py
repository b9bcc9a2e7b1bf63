"""The OFAv2 elastic supernet, its presets and plain-module materialisation."""

from natv2.supernet.config import SupernetConfig, config_for_encoding, encoding_of
from natv2.supernet.materialize import load_subnet, materialize, save_subnet
from natv2.supernet.network import OFAv2Supernet, build_supernet
from natv2.supernet.plain import Subnet

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
