"""The feature server as a bare ASGI application (no framework; see docs/serve.md for why).

Routes::

    GET  /features/{entity_id}   one entity (composite keys: values joined by ',')
    POST /features               {"entities": [...]} up to serving.max_batch
    POST /predict                {"entity": x} or {"entities": [...]}; needs a registered model
    GET  /healthz                the process is alive
    GET  /readyz                 artifacts verified and the store reachable (503 otherwise)
    GET  /info                   versions, entity keys, input and output columns
    GET  /metrics                Prometheus text format
    GET  /openapi.json           the OpenAPI 3 document

Every response is JSON except /metrics. Errors are ``{"error": code, "message": text}`` with
a 4xx/503 status; an unexpected exception becomes a 500 with the same shape and never a
traceback.

The app speaks two server interfaces over one request core (:meth:`ServingApp.handle`):
RSGI (``__rsgi__``), which `mlpipe serve` runs on Granian because it measured fastest, and
ASGI (``__call__``), so the same object can be mounted in any ASGI server. They differ only
in how the request body is read and the response is sent.
"""

from __future__ import annotations

import asyncio
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from mlpipe_cli.errors import MlpipeError, ServiceUnavailable, Signal, UsageError
from mlpipe_cli.serving.service import StoreIncompatible, TransformFailed

if TYPE_CHECKING:
    from mlpipe_cli.serving.featurelog import FeatureLogger
    from mlpipe_cli.serving.metrics import Metrics
    from mlpipe_cli.serving.service import FeatureService

_JSON = b"application/json"
_TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

EP_ONE = "/features/{entity_id}"
EP_BATCH = "/features"
EP_PREDICT = "/predict"


class HttpError(Signal):  # turned into a response by the app; on the errors tree
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ServingApp:
    """The feature server: an RSGI app (``__rsgi__``) and an ASGI app (``__call__``)."""

    def __init__(
        self,
        service: FeatureService,
        metrics: Metrics,
        logger: FeatureLogger | None = None,
        *,
        max_batch: int = 100,
        max_body_bytes: int = 1 << 20,
        openapi: bytes | None = None,
        coalesce: bool = False,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.logger = logger
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.transform_version = service.transform_version
        self._openapi = openapi
        self.started = False
        # Coalescing: single-entity GET /features and /predict requests waiting together share
        # one store call (Redis MGET, one SQLite IN query) and one model call (see
        # _flush_pending). A request alone pays one extra loop turn (~10-20 µs); the app
        # cannot know whether others are queued behind it, so it always defers.
        self.coalesce = coalesce
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._in_flight = False  # a coalesced batch is waiting on the store
        self._batch: asyncio.Task[None] | None = None  # the loop keeps only weak references

    # -- the request core shared by both interfaces -----------------------------------

    async def handle(self, path: str, method: str, read_body: Any) -> tuple[str, int, bytes, bytes]:
        """(metrics endpoint label, status, body, content type) for one request.

        ``read_body`` is an async callable returning the whole body (HttpError when it is too
        large or the client went away); only POST endpoints call it.
        """
        endpoint = _endpoint_of(path)
        try:
            status, body, ctype = await self._handle(endpoint, path, method, read_body)
        except HttpError as exc:
            return endpoint, exc.status, _error(exc.code, exc.message), _JSON
        except Exception as exc:  # never a traceback on the wire
            sys.stderr.write(f"mlpipe serve: unexpected {type(exc).__name__}: {exc}\n")
            return endpoint, 500, _error("internal", f"unexpected {type(exc).__name__}"), _JSON
        return endpoint, status, body, ctype

    def on_startup(self) -> None:
        if self.logger is not None:
            self.logger.start()
        self.started = True

    def on_shutdown(self) -> None:
        if self.logger is not None:
            self.logger.close()

    # -- RSGI (Granian) -----------------------------------------------------------------

    def __rsgi_init__(self, loop: Any) -> None:
        self.on_startup()

    def __rsgi_del__(self, loop: Any) -> None:
        self.on_shutdown()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # websockets are not served; Granian closes the connection
        start = perf_counter()
        max_bytes = self.max_body_bytes

        async def read_body() -> bytes:
            declared = scope.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _body_too_large(max_bytes)
            chunks = []
            size = 0
            try:
                async for chunk in proto:
                    size += len(chunk)
                    if size > max_bytes:
                        raise _body_too_large(max_bytes)
                    chunks.append(chunk)
            except HttpError:
                raise
            except Exception:  # RSGIProtocolClosed and friends
                raise HttpError(400, "bad_request", "client disconnected") from None
            return b"".join(chunks)

        endpoint, status, body, ctype = await self.handle(scope.path, scope.method, read_body)
        headers = _RSGI_HEADERS[ctype]
        if status == 405:
            headers = [*headers, ("allow", _ALLOW.get(endpoint, b"GET").decode())]
        proto.response_bytes(status, headers, body)
        self.metrics.observe(endpoint, status, perf_counter() - start)

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            start = perf_counter()
            max_bytes = self.max_body_bytes

            async def read_body() -> bytes:
                chunks = []
                size = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HttpError(400, "bad_request", "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > max_bytes:
                        raise _body_too_large(max_bytes)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)

            endpoint, status, body, ctype = await self.handle(
                scope["path"], scope["method"], read_body
            )
            headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
            if status == 405:
                headers.append((b"allow", _ALLOW.get(endpoint, b"GET")))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self.metrics.observe(endpoint, status, perf_counter() - start)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing --------------------------------------------------------------------------

    async def _handle(
        self, endpoint: str, path: str, method: str, read_body: Any
    ) -> tuple[int, bytes, bytes]:
        if endpoint == EP_ONE:
            if method not in ("GET", "HEAD"):
                raise HttpError(405, "method_not_allowed", "use GET")
            return *(await self._features_one(path[10:])), _JSON
        if endpoint in (EP_BATCH, EP_PREDICT):
            if method != "POST":
                raise HttpError(405, "method_not_allowed", "use POST")
            doc = _parse_json(await read_body())
            if endpoint == EP_BATCH:
                return *(await self._features_batch(doc)), _JSON
            return *(await self._predict(doc)), _JSON
        if endpoint == "other":
            raise HttpError(404, "not_found", f"no route {path}")
        if method not in ("GET", "HEAD"):
            raise HttpError(405, "method_not_allowed", "use GET")
        if endpoint == "/healthz":
            return 200, b'{"status":"ok"}', _JSON
        if endpoint == "/readyz":
            return *self._readyz(), _JSON
        if endpoint == "/metrics":
            return 200, self.metrics.render().encode(), _TEXT
        if endpoint == "/openapi.json":
            if self._openapi is None:
                from mlpipe_cli.serving.openapi import openapi_document

                self._openapi = orjson.dumps(openapi_document(self.service.info(), self.max_batch))
            return 200, self._openapi, _JSON
        info = self.service.info()  # /info
        return 200, orjson.dumps(info.__dict__, option=_OPTS), _JSON

    # -- endpoints ------------------------------------------------------------------------

    async def _features_one(self, entity_text: str) -> tuple[int, bytes]:
        if not entity_text or "/" in entity_text:
            raise HttpError(404, "not_found", "expected /features/{entity_id}")
        entity: Any = entity_text.split(",") if "," in entity_text else entity_text
        if self.coalesce:
            served = await self._coalesced(entity, score=False)
        else:
            served = (await self._lookup_many([entity]))[0]
        self.service.log(EP_ONE, [served])
        return 200, orjson.dumps(served.to_dict(self.transform_version), option=_OPTS)

    async def _coalesced(self, entity: Any, *, score: bool) -> Any:
        """Queue one entity for the next shared store call (and model call when ``score``)."""
        parsed = self._guard(lambda: self.service.parse_entity(entity))
        future = asyncio.get_running_loop().create_future()
        self._pending.append((parsed, future, score))
        if not self._flush_scheduled and not self._in_flight:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)
        return await future  # an HttpError set by the batch is raised here

    def _flush_pending(self) -> None:
        """One store round trip for every single-entity GET (and /predict) queued so far.

        With a store that answers over the network (Redis) the round trip runs without
        blocking the loop, one batch at a time: requests arriving meanwhile queue up and go
        out together when it returns, so batches grow with the load by themselves.
        """
        self._flush_scheduled = False
        if self._in_flight or not self._pending:
            return
        pending, self._pending = self._pending, []
        self.metrics.coalesced_calls += 1
        self.metrics.coalesced_entities += len(pending)
        if self.service.async_reads:
            self._in_flight = True
            self._batch = asyncio.get_running_loop().create_task(self._fetch_batch(pending))
            return
        try:
            self._resolve(pending, self.service.fetch_many([item[0] for item in pending]))
        except Exception as exc:
            _fail(pending, exc)  # every request still waiting gets the error, none hangs

    async def _fetch_batch(self, pending: list[_Pending]) -> None:
        try:
            results = await self.service.fetch_many_async([item[0] for item in pending])
            self._resolve(pending, results)
        except Exception as exc:
            _fail(pending, exc)  # every request still waiting gets the error, none hangs
        except BaseException:  # cancelled: the server is stopping
            _fail(pending, ServiceUnavailable("the server is shutting down"))
            raise
        finally:
            self._in_flight = False
            if self._pending:
                self._flush_pending()

    def _resolve(self, pending: list[_Pending], results: list[Any]) -> None:
        serve = self.service.serve_result
        to_score: list[tuple[Any, asyncio.Future[Any]]] = []
        for (parsed, future, score), result in zip(pending, results, strict=True):
            if future.done():  # the client went away
                continue
            try:
                served = serve(parsed, result)
            except Exception as exc:
                future.set_exception(_as_http(exc))
                continue
            if score:
                to_score.append((served, future))
            else:
                future.set_result(served)
        if not to_score:
            return
        # One model call for every /predict in the batch: a scikit-learn call costs about
        # the same for 1 row as for 50. If it fails, each row is scored alone, so only the
        # requests whose own rows fail get the error (as without coalescing).
        try:
            self._score([served for served, _ in to_score])
        except Exception:
            for served, future in to_score:
                try:
                    self._score([served])
                except Exception as exc:
                    future.set_exception(_as_http(exc))
                else:
                    future.set_result(served)
            return
        for served, future in to_score:
            future.set_result(served)

    def _score(self, served: list[Any]) -> None:
        try:
            self.service.predict(served)
        except MlpipeError:
            raise
        except Exception as exc:
            model = self.service.model
            version = model.binding.model_version if model is not None else "?"
            raise HttpError(
                500, "model_failed", f"model {version} failed: {type(exc).__name__}: {exc}"
            ) from None

    async def _lookup_many(self, entities: list[Any]) -> list[Any]:
        try:
            if self.service.async_reads:
                return await self.service.lookup_many_async(entities)
            return self.service.lookup_many(entities)
        except Exception as exc:
            raise _as_http(exc) from None

    async def _features_batch(self, doc: Any) -> tuple[int, bytes]:
        entities = self._entities(doc, allow_single=False)
        served = await self._lookup_many(entities)
        self.service.log(EP_BATCH, served)
        return 200, self._batch_body(served)

    async def _predict(self, doc: Any) -> tuple[int, bytes]:
        if self.service.model is None:
            raise HttpError(
                404,
                "no_model",
                "no model is registered for this transform version "
                "(mlpipe model register MODEL.joblib --artifact VERSION)",
            )
        single = isinstance(doc, dict) and "entity" in doc and "entities" not in doc
        entities = self._entities(doc, allow_single=True)
        if single and self.coalesce:
            served = [await self._coalesced(entities[0], score=True)]
        else:
            served = await self._lookup_many(entities)
            self._score(served)
        self.service.log(EP_PREDICT, served)
        if single:
            doc_out = served[0].to_dict(self.transform_version)
            doc_out["model_version"] = self.service.model.binding.model_version
            return 200, orjson.dumps(doc_out, option=_OPTS)
        return 200, self._batch_body(served, model=True)

    def _readyz(self) -> tuple[int, bytes]:
        doc: dict[str, Any] = {
            "transform_version": self.transform_version,
            "model_version": (
                self.service.model.binding.model_version if self.service.model else None
            ),
        }
        try:
            self.service.ping()
        except (ServiceUnavailable, StoreIncompatible) as exc:
            doc.update(status="not_ready", reason=str(exc), store_version=None)
            return 503, orjson.dumps(doc)
        except MlpipeError as exc:
            doc.update(status="not_ready", reason=str(exc), store_version=None)
            return 503, orjson.dumps(doc)
        doc.update(status="ready", store_version=self.service.store_version)
        return 200, orjson.dumps(doc)

    # -- helpers --------------------------------------------------------------------------

    def _batch_body(self, served: list[Any], *, model: bool = False) -> bytes:
        doc: dict[str, Any] = {
            "count": len(served),
            "transform_version": self.transform_version,
            "results": [s.to_dict(self.transform_version) for s in served],
        }
        if model and self.service.model is not None:
            doc["model_version"] = self.service.model.binding.model_version
        return orjson.dumps(doc, option=_OPTS)

    def _entities(self, doc: Any, *, allow_single: bool) -> list[Any]:
        if not isinstance(doc, dict):
            raise HttpError(400, "bad_request", 'expected a JSON object {"entities": [...]}')
        if allow_single and "entity" in doc and "entities" not in doc:
            return [doc["entity"]]
        entities = doc.get("entities")
        if not isinstance(entities, list):
            what = (
                '{"entity": ID} or {"entities": [...]}' if allow_single else ('{"entities": [...]}')
            )
            raise HttpError(400, "bad_request", f"expected a JSON object {what}")
        if not entities:
            raise HttpError(400, "bad_request", "entities is empty")
        if len(entities) > self.max_batch:
            raise HttpError(
                413,
                "batch_too_large",
                f"{len(entities)} entities exceed serving.max_batch = {self.max_batch}",
            )
        extra = sorted(set(doc) - {"entities", "entity"})
        if extra:
            raise HttpError(400, "bad_request", f"unknown key(s): {', '.join(extra)}")
        return entities

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            raise _as_http(exc) from None


_ALLOW = {EP_ONE: b"GET", EP_BATCH: b"POST", EP_PREDICT: b"POST"}
_FIXED = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/info", EP_BATCH, EP_PREDICT}


def _endpoint_of(path: str) -> str:
    """The metrics label of a path: its route template, or 'other'."""
    if path.startswith("/features/"):
        return EP_ONE
    return path if path in _FIXED else "other"


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def _as_http(exc: Exception) -> Exception:
    """The HTTP error for a service exception (others pass through: a 500 without details)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, UsageError):
        return HttpError(400, "bad_entity", str(exc))
    if isinstance(exc, StoreIncompatible):
        return HttpError(503, "store_incompatible", str(exc))
    if isinstance(exc, ServiceUnavailable):
        return HttpError(503, "store_unavailable", str(exc))
    if isinstance(exc, TransformFailed):
        return HttpError(500, "transform_failed", str(exc))
    return exc


# (parsed entity, the request's future, whether to score it with the model)
_Pending = tuple[tuple[list[Any], str], "asyncio.Future[Any]", bool]


def _fail(pending: list[Any], exc: Exception) -> None:
    """Fail every waiting request of a batch (one exception object each: they are raised
    concurrently in different tasks). Items are tuples whose second element is the future."""
    error = _as_http(exc)
    if not isinstance(error, HttpError):  # a bug, not a store or input problem
        sys.stderr.write(f"mlpipe serve: unexpected {type(exc).__name__}: {exc}\n")
        error = HttpError(500, "internal", f"unexpected {type(exc).__name__}")
    for item in pending:
        future = item[1]
        if not future.done():
            future.set_exception(HttpError(error.status, error.code, error.message))


def _body_too_large(limit: int) -> HttpError:
    return HttpError(
        413, "body_too_large", f"request body exceeds serving.max_body_bytes = {limit}"
    )


def _parse_json(body: bytes) -> Any:
    if not body:
        raise HttpError(400, "bad_request", "empty request body; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


_RSGI_HEADERS = {
    _JSON: [("content-type", _JSON.decode())],
    _TEXT: [("content-type", _TEXT.decode())],
}
