"""Point-in-time features: one definition feeds `training-set` (offline) and `materialize`.

Public API (docs/architecture.md §2)::

    from mlpipe_cli.features import compute_features, feature_names
"""

from mlpipe_cli.features.engine import compute_features, feature_names

__all__ = ["compute_features", "feature_names"]
