"""Reference profiles, PSI and KS: the one drift implementation shared by validate, fit and
psi-report (see docs/architecture.md §1 and docs/psi-report.md for the conventions)."""

from mlpipe_cli.drift.compare import ColumnDrift, compare_to_profile, psi
from mlpipe_cli.drift.profile import build_profile, read_profile, write_profile

__all__ = [
    "ColumnDrift",
    "build_profile",
    "compare_to_profile",
    "psi",
    "read_profile",
    "write_profile",
]
