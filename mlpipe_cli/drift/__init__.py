"""Reference profiles, PSI and KS: the one drift implementation shared by validate, fit and
psi-report (see docs/architecture.md §1 and docs/psi-report.md for the conventions)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpipe_cli.drift.compare import ColumnDrift, compare_to_profile, psi
    from mlpipe_cli.drift.profile import build_profile, read_profile, write_profile

# Loaded on first use: `fit` writes a profile and never compares one (drift.compare is
# ~6 ms of every fit's start-up, #19).
_HOMES = {
    "ColumnDrift": "mlpipe_cli.drift.compare",
    "compare_to_profile": "mlpipe_cli.drift.compare",
    "psi": "mlpipe_cli.drift.compare",
    "build_profile": "mlpipe_cli.drift.profile",
    "read_profile": "mlpipe_cli.drift.profile",
    "write_profile": "mlpipe_cli.drift.profile",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home), name)


__all__ = [
    "ColumnDrift",
    "build_profile",
    "compare_to_profile",
    "psi",
    "read_profile",
    "write_profile",
]
