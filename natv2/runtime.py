"""Process-level facts that decide CPU training speed, checked once where training starts."""

from __future__ import annotations

import warnings

import natv2

OPENMP_ADVICE = (
    "torch was imported before natv2 without OMP_WAIT_POLICY set: OpenMP busy-waits between "
    "parallel regions, which made CPU training here up to 6x slower whenever another process "
    "ran. Set OMP_WAIT_POLICY=PASSIVE in the environment, or import natv2 before torch."
)


def openmp_busy_wait_warning() -> str | None:
    """The advice above when this process's OpenMP busy-waits (torch imported first, no policy
    set), else None."""
    return OPENMP_ADVICE if natv2.OPENMP_SET_TOO_LATE else None


def warn_if_openmp_busy_waits() -> None:
    """Warn once per process (Python's warning registry keeps it to one) if OpenMP busy-waits."""
    advice = openmp_busy_wait_warning()
    if advice is not None:
        warnings.warn(advice, RuntimeWarning, stacklevel=3)
