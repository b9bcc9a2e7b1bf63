"""Device profiles: the budgets and objectives of a class of device, read from a TOML file.

``profile`` holds the type (``Profile``, ``Costs``, ``Verdict``: what fits is decided there, once);
``loader`` reads and validates the TOML files (the schema and the derived budgets are documented
there). The shipped profiles are the TOML files beside this module.

Standard library only: this package knows nothing of the rest of natv2 except its error type and
the untrusted-input readers (``natv2.untrusted``, standard library only too).
"""

from __future__ import annotations

from natv2.device_profiles.loader import MAX_FIGURE, list_profiles, load_profile
from natv2.device_profiles.profile import (
    BUDGET_KEYS,
    COST_KEYS,
    DEFAULT_MAX_TOP1_DROP,
    DTYPES,
    LATENCY_MODES,
    MAX_INPUT_SIDE,
    MIN_INPUT_SIDE,
    MIN_TOP1_IMAGES,
    OBJECTIVE_COST_KEYS,
    OBJECTIVES,
    RUNTIMES,
    BudgetCheck,
    Costs,
    Profile,
    QuantizedTop1,
    Top1Check,
    Verdict,
    check_feasible,
)

__all__ = [
    "BUDGET_KEYS",
    "COST_KEYS",
    "DEFAULT_MAX_TOP1_DROP",
    "DTYPES",
    "LATENCY_MODES",
    "MAX_FIGURE",
    "MAX_INPUT_SIDE",
    "MIN_INPUT_SIDE",
    "MIN_TOP1_IMAGES",
    "OBJECTIVES",
    "OBJECTIVE_COST_KEYS",
    "RUNTIMES",
    "BudgetCheck",
    "Costs",
    "Profile",
    "QuantizedTop1",
    "Top1Check",
    "Verdict",
    "check_feasible",
    "list_profiles",
    "load_profile",
]
