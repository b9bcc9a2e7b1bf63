"""natv2: NATv2 neural architecture transfer on OFAv2 supernets, fronted by device profiles."""

import os as _os
import sys as _sys

# OpenMP's default busy-waiting makes two-thread CPU inference up to 20x slower on small
# virtual machines (measured here: 5 s instead of 0.25 s for one tiny-supernet batch). It must be
# set before torch loads OpenMP, i.e. before ``import torch``; users can still override it.
# A program that imported torch first has OpenMP loaded already: the setting comes too late
# there, which ``natv2.runtime.openmp_busy_wait_warning`` reports (a fact of this process's
# start, fixed here once).
OPENMP_SET_TOO_LATE: bool = "torch" in _sys.modules and "OMP_WAIT_POLICY" not in _os.environ
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
