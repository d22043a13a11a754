"""The end of every single-entity request as one function generated per live version.

After the store answered and the transform ran, a request still had to log its row and
encode its answer: ``FeatureService.log`` (a loop over served entities, a ``map`` over the
log columns), ``Served.to_dict`` (a dict built key by key, the version looked up through
the origin), ``orjson.dumps``, each a call or two. ``compile_reply`` writes that tail as the
Python source of one function for one live version (the technique of
``transforms/codegen.py``): the log row is one tuple of ``values.get(<column>)`` calls in
the log's column order, the versions are constants, and the answer is one ``orjson.dumps``
of a dict literal whose keys are in the order clients have always read. The server builds
it when a version goes live (start-up, `mlpipe promote`), never per request.

The bytes are those of ``orjson.dumps(served.to_dict(...))`` (plus ``model_version`` for
/predict), and the log row is the one ``FeatureService.log`` writes: tests/test_serve_hotpath.py
compares both over messy records.
"""

from __future__ import annotations

import hashlib
import linecache
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from mlpipe_cli.serving.service import FeatureService, Served

# served entity, whether the answer names the model version (POST /predict) -> body
Reply = Callable[[str, "Served", bool], bytes]

OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def compile_reply(service: FeatureService) -> tuple[Reply, str]:
    """(reply, its source) for ``service``'s live version: ``reply(endpoint, served, scored)``
    logs the served row (when the feature log is on) and returns the JSON answer."""
    from mlpipe_cli.transforms.codegen import Source

    src = Source(reserved=("reply", "endpoint", "s", "scored", "values", "entity", "doc"))
    dumps = src.bind(orjson.dumps, "dumps")
    opts = src.const(OPTS)
    version = src.bind(service.transform_version, "transform_version")
    model = service.model
    model_version = src.bind(model.binding.model_version, "model_version") if model else "None"
    logger = service.logger
    with src.block("def reply(endpoint, s, scored):"):
        src.line('"""Log one served entity and encode its answer (generated: hotpath.py)."""')
        src.line("values = s.values")
        if logger is not None:
            log = src.bind(logger.log, "log")
            clock = src.bind(time.time_ns, "time_ns")
            getters = "".join(f"values.get({column!r}), " for column in service.log_columns)
            call = (
                f"{log}(endpoint, s.entity_key, s.store_version, s.cold_start, "
                f"({getters}), tuple(s.vector), s.prediction, {clock}() // 1000)"
            )
            if logger.sample_rate < 1.0:  # the draw comes before the row is built
                with src.block(f"if {src.bind(logger.keep, 'keep')}():"):
                    src.line(call)
            else:
                src.line(call)
        src.line("entity = s.entity")
        src.line(
            'doc = {"entity": entity[0] if len(entity) == 1 else entity, '
            '"cold_start": s.cold_start, "features": values, "vector": s.vector, '
            f'"expired": s.expired, "transform_version": {version}, '
            '"store_version": s.store_version, "as_of": s.as_of}'
        )
        with src.block("if s.prediction is not None:"):
            src.line('doc["prediction"] = s.prediction')
        with src.block("if s.freshness is not None:"):
            src.line('doc["freshness"] = s.freshness')
        with src.block("if scored:"):
            src.line(f'doc["model_version"] = {model_version}')
        src.line(f"return {dumps}(doc, option={opts})")
    text = "\n".join(src.lines) + "\n"
    filename = f"<mlpipe reply {hashlib.sha256(text.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict[str, Any] = dict(src.namespace)
    exec(compile(text, filename, "exec"), namespace)
    return namespace["reply"], text
