"""The one ttl rule, shared by the offline engine and the online store.

Which features a ttl governs: every feature read from a source with a ``timestamp`` (event
aggregates, lags, ``time_since_last``, timestamped attributes alike) when the feature sets
``ttl`` or, failing that, its source does. Type-2 tables (``valid_from``/``valid_to``) and
plain dimension tables have no event time to age, so no ttl governs them (a feature-level
ttl on them is a config error).

The expiry test: a feature is expired when the entity's newest visible source row is more
than ttl old, ``age > ttl`` (exactly ttl old is still fresh); an expired feature is its
``default``. ``compute_features`` applies it as of each spine row's time; materialize stores
each value's event time and the store applies it at read time with the same inequality.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig
    from mlpipe_cli.config.sources import SourceConfig

Age = TypeVar("Age")


def governing_ttl(feature: FeatureConfig, source: SourceConfig) -> timedelta | None:
    """The ttl that governs ``feature`` (its own, else its source's), or None."""
    if source.timestamp is None or source.valid_from is not None:
        return None
    return feature.ttl if feature.ttl is not None else source.ttl


def is_expired(age: Age, ttl: Any) -> Age:
    """The expiry test, for numbers (seconds) and Polars expressions (ticks) alike."""
    return age > ttl


def feature_ttls(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> dict[str, float]:
    """Feature name -> the ttl governing it, in seconds (features without one left out)."""
    out = {}
    for feature in selected:
        ttl = governing_ttl(feature, config.sources[feature.source])
        if ttl is not None:
            out[feature.name] = ttl.total_seconds()
    return out
