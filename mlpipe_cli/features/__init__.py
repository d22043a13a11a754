"""Point-in-time features: one definition feeds `training-set` (offline) and `materialize`.

Public API (docs/architecture.md §2)::

    from mlpipe_cli.features import compute_features, feature_names
    from mlpipe_cli.features import check_match_rates, FeatureFrame, FeatureStats
    from mlpipe_cli.features import scan_source   # a source with its derived columns
"""

from mlpipe_cli.features.engine import (
    FeatureFrame,
    FeatureStats,
    check_match_rates,
    compute_features,
    feature_names,
)
from mlpipe_cli.features.scan import scan_source

__all__ = [
    "FeatureFrame",
    "FeatureStats",
    "check_match_rates",
    "compute_features",
    "feature_names",
    "scan_source",
]
