"""natv2: NATv2 neural architecture transfer on OFAv2 supernets, fronted by device profiles."""

import os as _os

# OpenMP's default busy-waiting makes two-thread CPU inference up to 20x slower on small
# virtual machines (measured here: 5 s instead of 0.25 s for one tiny-supernet batch). It must be
# set before torch loads OpenMP, i.e. before ``import torch``; users can still override it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
