"""natv2: NATv2 neural architecture transfer on OFAv2 supernets, fronted by device profiles."""

__version__ = "0.1.0"
