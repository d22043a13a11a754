"""Step type -> transformer class, for every family; ``build`` makes a column's transformer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlpipe_cli.transforms.base import Drop, Encoder
from mlpipe_cli.transforms.categorical import Frequency, OneHot, Ordinal, TargetEnc
from mlpipe_cli.transforms.embedding import EmbeddingEnc
from mlpipe_cli.transforms.numeric import NUMERIC_STEPS, NumericChain, Passthrough
from mlpipe_cli.transforms.temporal import Temporal

ENCODERS: dict[str, type[Encoder]] = {
    cls.type: cls
    for cls in (OneHot, Ordinal, Frequency, TargetEnc, Temporal, EmbeddingEnc, Passthrough, Drop)
}
# every step type a config may name
STEP_TYPES: tuple[str, ...] = (*NUMERIC_STEPS, *ENCODERS)


def build(
    column: str,
    steps: list[Mapping[str, Any]],
    input_families: Mapping[str, Any] | None = None,
) -> NumericChain | Encoder:
    """The transformer for a column's step list (validated by the config model).

    ``input_families``: the state's ``input_families`` (what a temporal transformer's online
    path needs to know about its reference column); None when fitting.
    """
    if steps[0]["type"] in NUMERIC_STEPS:
        return NumericChain(column, list(steps))
    if steps[0]["type"] == Temporal.type:
        return Temporal(column, steps[0], input_families)
    return ENCODERS[steps[0]["type"]](column, steps[0])
