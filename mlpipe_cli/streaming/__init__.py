"""Streaming features: events pushed in seconds, windows evaluated exactly at request time.

    mlpipe push --source orders events.jsonl     # checked by the contract, XADDed
    mlpipe stream                                # per-entity state in Redis, from the batch on

Modules: ``plan`` (what a streamed source needs; the Redis key layout), ``source`` (the
event-source interface, Redis Streams), ``events`` (reading and checking events),
``lua`` + ``state`` (the atomic apply script, the bootstrap, reading state), ``consumer``
(the loop), ``evaluate`` (feature values at a time t, pure Python) and ``reader``
(``StreamingFeatureReader``: what serving calls). docs/streaming.md has the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpipe_cli.streaming.reader import StreamedFeatures, StreamingFeatureReader

__all__ = ["StreamedFeatures", "StreamingFeatureReader"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mlpipe_cli.streaming import reader

        return getattr(reader, name)
    raise AttributeError(name)
