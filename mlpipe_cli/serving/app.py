"""The feature server as a bare ASGI application (no framework; see docs/serve.md for why).

Routes::

    GET  /features/{entity_id}   one entity (composite keys: values joined by ',')
    GET  /features?k1=v1&k2=v2   one entity by named keys (several entity types: every key)
    POST /features               {"entities": [...]} up to serving.max_batch
    POST /predict                {"entity": x} or {"entities": [...]}; needs a registered model
    GET  /healthz                the process is alive
    GET  /readyz                 artifacts verified and the store reachable (503 otherwise)
    GET  /info                   versions, entity keys, input and output columns
    GET  /metrics                Prometheus text format
    GET  /openapi.json           the OpenAPI 3 document

Every response is JSON except /metrics. Errors are ``{"error": code, "message": text}`` with
a 4xx/503 status; an unexpected exception becomes a 500 with the same shape and never a
traceback. What a client reads never names the store's host, port or path ("store
unavailable"); the details go to the server's stderr (service.StoreHealth).

Hostile clients: with ``serving.auth_token`` every route but /healthz needs
``Authorization: Bearer <token>`` (constant-time compare; 401 + ``WWW-Authenticate``
otherwise, checked before the body is read); a request body must arrive within
``serving.read_timeout`` (408 and the connection is closed); entity keys are parsed strictly
before the store is touched (serving/keys.py), so a bad key is a 400 for its own request only.

The app speaks two server interfaces over one request core (:meth:`ServingApp.handle`):
RSGI (``__rsgi__``), which `mlpipe serve` runs on Granian because it measured fastest, and
ASGI (``__call__``), so the same object can be mounted in any ASGI server. They differ only
in how the request body is read and the response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
import time
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from mlpipe_cli.errors import MlpipeError, ServiceUnavailable, Signal, UsageError
from mlpipe_cli.serving.service import NoLiveVersion, StoreIncompatible, TransformFailed

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

# What clients read when the store fails; the details (host, port, path, error) are logged.
STORE_UNAVAILABLE = "store unavailable"
STORE_EMPTY = "store unavailable: no live materialized version"
_OPEN_ROUTES = frozenset({"/healthz"})  # answered without a token (liveness probes)


class HttpError(Signal):  # turned into a response by the app; on the errors tree
    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


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
        auth_token: str | None = None,
        read_timeout: float = 10.0,
        store_timeout: float = 2.0,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.logger = logger
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it started
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.transform_version = service.transform_version
        self._openapi = openapi
        self.started = False
        self._auth = b"Bearer " + auth_token.encode() if auth_token else None
        self.read_timeout = read_timeout
        # A coalesced batch must answer by its oldest request's arrival + this (one deadline
        # per request, however long it waited for the batch before it).
        self.store_timeout = store_timeout
        self.in_flight = 0  # requests between arrival and response (for the SIGTERM drain)
        self.requests_total = 0
        self.stopping = False  # set by the server on SIGTERM/SIGINT
        self.cut = 0  # requests still in flight when the drain deadline passed
        self.tls = False
        # Coalescing: single-entity GET /features and /predict requests waiting together share
        # one store call (Redis MGET, one SQLite IN query) and one model call (see
        # _flush_pending). A request alone pays one extra loop turn (~10-20 µs); the app
        # cannot know whether others are queued behind it, so it always defers.
        self.coalesce = coalesce
        self._pending: list[_Pending] = []
        self._pending_since = 0.0  # time.monotonic() when the oldest pending request came
        self._flush_scheduled = False
        self._in_flight = False  # a coalesced batch is waiting on the store
        self._batch: asyncio.Task[None] | None = None  # the loop keeps only weak references

    # -- the request core shared by both interfaces -----------------------------------

    async def handle(
        self,
        path: str,
        method: str,
        read_body: Any,
        authorization: str | None = None,
        query: str = "",
    ) -> tuple[str, int, bytes, bytes, list[tuple[str, str]] | None]:
        """(metrics endpoint label, status, body, content type, extra headers) for a request.

        ``read_body`` is an async callable returning the whole body (HttpError when it is too
        large, too slow or the client went away); only POST endpoints call it, and only once
        the request is authorised.
        """
        endpoint = _endpoint_of(path)
        self.in_flight += 1
        try:
            if self._auth is not None and endpoint not in _OPEN_ROUTES:
                self._authorise(authorization)
            status, body, ctype = await self._handle(endpoint, path, method, read_body, query)
        except HttpError as exc:
            return endpoint, exc.status, _error(exc.code, exc.message), _JSON, exc.headers
        except Exception as exc:  # never a traceback on the wire
            sys.stderr.write(f"mlpipe serve: unexpected {type(exc).__name__}: {exc}\n")
            return (
                endpoint,
                500,
                _error("internal", f"unexpected {type(exc).__name__}"),
                _JSON,
                None,
            )
        finally:
            self.in_flight -= 1
            self.requests_total += 1
        return endpoint, status, body, ctype, None

    def _authorise(self, authorization: str | None) -> None:
        """Bearer token check (RFC 6750), constant time in the token's content."""
        expected = self._auth
        assert expected is not None
        if not authorization:
            raise HttpError(
                401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)",
                [("www-authenticate", 'Bearer realm="mlpipe"')],
            )  # fmt: skip
        scheme, _, token = authorization.partition(" ")
        given = b"Bearer " + token.strip().encode("utf-8", "replace")
        # compare_digest takes the same time for any two values of the same length; the
        # scheme is compared case-insensitively first (it is not secret)
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise HttpError(
                401, "unauthorized", "invalid bearer token",
                [("www-authenticate", 'Bearer realm="mlpipe", error="invalid_token"')],
            )  # fmt: skip

    def on_startup(self) -> None:
        if self.logger is not None:
            # On the server's event loop (RSGI init and ASGI lifespan both run on it), the
            # feature log's writer works between requests rather than on a second Python
            # thread that competes with the loop for the GIL (serving/featurelog.py).
            loop = self.loop
            if loop is None:
                with contextlib.suppress(RuntimeError):  # not on a loop: the thread driver
                    loop = asyncio.get_running_loop()
            self.logger.start(loop)
        self.started = True

    def on_shutdown(self) -> None:
        if self.logger is not None:
            self.logger.close()

    # -- RSGI (Granian) -----------------------------------------------------------------

    def __rsgi_init__(self, loop: Any) -> None:
        # Granian's worker processes call this before their loop runs: keep it for on_startup
        self.loop = loop
        self.on_startup()

    def __rsgi_del__(self, loop: Any) -> None:
        self.on_shutdown()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # websockets are not served; Granian closes the connection
        start = perf_counter()
        path = scope.path
        if path[:10] == "/features/" and scope.method == "GET":
            await self._rsgi_features_one(scope, proto, path, start)
            return
        if path == EP_PREDICT and scope.method == "POST":
            await self._rsgi_predict(scope, proto, start)
            return
        await self._rsgi_generic(scope, proto, start)

    async def _rsgi_generic(self, scope: Any, proto: Any, start: float) -> None:
        """Every route through ``handle``: routing, the streamed body reader, headers."""
        max_bytes = self.max_body_bytes
        read_timeout = self.read_timeout

        async def read_body() -> bytes:
            declared = scope.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _body_too_large(max_bytes)
            chunks = []
            size = 0
            try:
                async with asyncio.timeout(read_timeout):
                    async for chunk in proto:
                        size += len(chunk)
                        if size > max_bytes:
                            raise _body_too_large(max_bytes)
                        chunks.append(chunk)
            except HttpError:
                raise
            except TimeoutError:
                raise _body_too_slow(read_timeout) from None
            except Exception:  # RSGIProtocolClosed and friends
                raise HttpError(400, "bad_request", "client disconnected") from None
            return b"".join(chunks)

        headers_in = scope.headers
        endpoint, status, body, ctype, extra = await self.handle(
            scope.path,
            scope.method,
            read_body,
            headers_in.get("authorization") if self._auth is not None else None,
            scope.query_string,
        )
        headers = _RSGI_HEADERS[ctype]
        if status == 405:
            headers = [*headers, ("allow", _ALLOW.get(endpoint, b"GET").decode())]
        if extra:
            headers = [*headers, *extra]
        proto.response_bytes(status, headers, body)
        self.metrics.observe(endpoint, status, perf_counter() - start)

    async def _rsgi_features_one(self, scope: Any, proto: Any, path: str, start: float) -> None:
        """GET /features/{id} in one piece: the hot path, without the generic routing,
        body reader and header handling of ``handle`` (same behaviour, same errors)."""
        self.in_flight += 1
        headers = _JSON_HEADERS
        try:
            if self._auth is not None:
                self._authorise(scope.headers.get("authorization"))
            text = path[10:]
            if not text or "/" in text:
                raise HttpError(404, "not_found", "expected /features/{entity_id}")
            if self.coalesce:
                served = await self._single(text.split(",") if "," in text else text, False, True)
                status, body = 200, (served.origin or self.service).reply(EP_ONE, served, False)
            else:
                status, body = await self._features_one(text)
        except HttpError as exc:
            status, body = exc.status, _error(exc.code, exc.message)
            if exc.headers:
                headers = [*headers, *exc.headers]
        except Exception as exc:  # never a traceback on the wire
            sys.stderr.write(f"mlpipe serve: unexpected {type(exc).__name__}: {exc}\n")
            status, body = 500, _error("internal", f"unexpected {type(exc).__name__}")
        finally:
            self.in_flight -= 1
            self.requests_total += 1
        proto.response_bytes(status, headers, body)
        self.metrics.observe(EP_ONE, status, perf_counter() - start)

    async def _rsgi_predict(self, scope: Any, proto: Any, start: float) -> None:
        """POST /predict: a body of declared length is read in one call, and a single
        ``{"entity": x}`` takes the coalesced path to one reply (same behaviour and errors
        as ``handle``, which serves every other shape of request)."""
        headers_in = scope.headers
        declared = headers_in.get("content-length")
        auth = headers_in.get("authorization") if self._auth is not None else None
        if (
            declared is None
            or not declared.isdigit()
            or int(declared) > self.max_body_bytes
            or not self.coalesce
        ):
            await self._rsgi_generic(scope, proto, start)
            return
        self.in_flight += 1
        extra = None
        try:
            if self._auth is not None:
                self._authorise(auth)
            try:
                async with asyncio.timeout(self.read_timeout):
                    body = await proto()
            except TimeoutError:
                raise _body_too_slow(self.read_timeout) from None
            except Exception:  # RSGIProtocolClosed and friends
                raise HttpError(400, "bad_request", "client disconnected") from None
            if len(body) > self.max_body_bytes:
                raise _body_too_large(self.max_body_bytes)
            doc = _parse_json(body)
            if type(doc) is dict and len(doc) == 1 and "entity" in doc and self.service.model:
                served = await self._single(doc["entity"], True, False)
                status = 200
                body = (served.origin or self.service).reply(EP_PREDICT, served, True)
            else:
                status, body = await self._predict(doc)
        except HttpError as exc:
            status, body, extra = exc.status, _error(exc.code, exc.message), exc.headers
        except Exception as exc:  # never a traceback on the wire
            sys.stderr.write(f"mlpipe serve: unexpected {type(exc).__name__}: {exc}\n")
            status, body = 500, _error("internal", f"unexpected {type(exc).__name__}")
        finally:
            self.in_flight -= 1
            self.requests_total += 1
        proto.response_bytes(status, [*_JSON_HEADERS, *extra] if extra else _JSON_HEADERS, body)
        self.metrics.observe(EP_PREDICT, status, perf_counter() - start)

    async def _single(self, entity: Any, score: bool, from_path: bool) -> Any:
        """One entity through the coalesced store path (and the model when ``score``): the
        key is parsed (400 on its own) before it can join a batch."""
        service = self.service
        try:
            parsed = service.parse_entity(entity, from_path=from_path)
        except Exception as exc:
            raise _as_http(exc) from None
        if not self._in_flight and not self._pending and service.async_reads:
            return await self._fetch_now(parsed, score)
        return await self._enqueue(parsed, score)

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            start = perf_counter()
            max_bytes = self.max_body_bytes
            read_timeout = self.read_timeout

            async def read_body() -> bytes:
                chunks = []
                size = 0
                try:
                    async with asyncio.timeout(read_timeout):
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
                except TimeoutError:
                    raise _body_too_slow(read_timeout) from None

            authorization = None
            if self._auth is not None:
                for name, value in scope.get("headers", ()):
                    if name == b"authorization":
                        authorization = value.decode("latin-1")
                        break
            endpoint, status, body, ctype, extra = await self.handle(
                scope["path"],
                scope["method"],
                read_body,
                authorization,
                scope.get("query_string", b"").decode("latin-1"),
            )
            headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
            if status == 405:
                headers.append((b"allow", _ALLOW.get(endpoint, b"GET")))
            if extra:
                headers.extend((k.encode(), v.encode()) for k, v in extra)
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
        self, endpoint: str, path: str, method: str, read_body: Any, query: str = ""
    ) -> tuple[int, bytes, bytes]:
        if endpoint == EP_ONE:
            if method not in ("GET", "HEAD"):
                raise HttpError(405, "method_not_allowed", "use GET")
            return *(await self._features_one(path[10:])), _JSON
        if endpoint == EP_BATCH and method in ("GET", "HEAD"):
            if not query:
                raise HttpError(
                    405, "method_not_allowed",
                    "use POST, or GET with the entity's keys: /features?key=value&...",
                )  # fmt: skip
            return *(await self._features_named(query)), _JSON
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
            return *(await self._readyz()), _JSON
        if endpoint == "/metrics":
            return 200, self.metrics.render().encode(), _TEXT
        if endpoint == "/openapi.json":
            if self._openapi is None:
                from mlpipe_cli.serving.openapi import openapi_document

                self._openapi = orjson.dumps(openapi_document(self.service.info(), self.max_batch))
            return 200, self._openapi, _JSON
        info = self.service.info()  # /info
        # vector_columns: the names of the `vector` every answer carries, position by position
        document = {**info.__dict__, "vector_columns": info.output_columns}
        return 200, orjson.dumps(document, option=_OPTS), _JSON

    # -- endpoints ------------------------------------------------------------------------

    async def _features_one(self, entity_text: str) -> tuple[int, bytes]:
        if not entity_text or "/" in entity_text:
            raise HttpError(404, "not_found", "expected /features/{entity_id}")
        entity: Any = entity_text.split(",") if "," in entity_text else entity_text
        if self.coalesce:
            served = await self._coalesced(entity, score=False, from_path=True)
        else:
            parsed = self._guard(lambda: self.service.parse_entity(entity, from_path=True))
            served = (await self._lookup_many([parsed[0]]))[0]
        return 200, (served.origin or self.service).reply(EP_ONE, served, False)

    async def _features_named(self, query: str) -> tuple[int, bytes]:
        """GET /features?rider_id=r1&driver_id=drv-2: one entity by named keys (every key
        column of the live version), coalesced like GET /features/{entity_id}."""
        from mlpipe_cli.serving.keys import parse_query

        named = self._guard(lambda: parse_query(query))
        if self.coalesce:
            served = await self._coalesced(named, score=False)
        else:
            parsed = self._guard(lambda: self.service.parse_entity(named))
            served = (await self._lookup_many([parsed[0]]))[0]
        return 200, (served.origin or self.service).reply(EP_BATCH, served, False)

    async def _coalesced(self, entity: Any, *, score: bool, from_path: bool = False) -> Any:
        """Queue one entity for the next shared store call (and model call when ``score``).

        The key is parsed (and refused, 400) here, before it can join a batch: nothing a
        client sends can fail the store call other requests share.
        """
        return await self._single(entity, score, from_path)

    async def _enqueue(self, parsed: tuple[list[Any], str], score: bool) -> Any:
        """Wait for the next shared store call (one is in flight, or others are queued)."""
        future = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((parsed, future, score))
        if not self._flush_scheduled and not self._in_flight:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pending)
        return await future  # an HttpError set by the batch is raised here

    async def _fetch_now(self, parsed: tuple[list[Any], str], score: bool) -> Any:
        """Nothing queued and no batch in flight: fetch in this request's own task, with no
        extra loop turn or task (what a lone client pays). Requests that arrive meanwhile
        queue up and go out together when this returns, as with any batch."""
        self._in_flight = True
        try:
            results = await self.service.fetch_many_async(
                [parsed], time.monotonic() + self.store_timeout
            )
        except Exception as exc:
            raise _as_http(exc) from None
        finally:
            self._in_flight = False
            if self._pending and not self._flush_scheduled:
                self._flush_pending()
        try:
            served = self.service.serve_result(parsed, results[0])
            if score:
                self._score([served])
        except Exception as exc:
            raise _as_http(exc) from None
        return served

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
            deadline = self._pending_since + self.store_timeout
            self._batch = asyncio.get_running_loop().create_task(
                self._fetch_batch(pending, deadline)
            )
            return
        try:
            self._resolve(pending, self.service.fetch_many([item[0] for item in pending]))
        except Exception as exc:
            _fail(pending, exc)  # every request still waiting gets the error, none hangs

    async def _fetch_batch(self, pending: list[_Pending], deadline: float) -> None:
        try:
            results = await self.service.fetch_many_async([item[0] for item in pending], deadline)
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
                "(mlpipe model register MODEL.skops --artifact VERSION)",
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
            doc_out["model_version"] = _origin(served, self.service).model.binding.model_version
            return 200, orjson.dumps(doc_out, option=_OPTS)
        return 200, self._batch_body(served, model=True)

    async def _readyz(self) -> tuple[int, bytes]:
        doc: dict[str, Any] = {
            "transform_version": self.transform_version,
            "model_version": (
                self.service.model.binding.model_version if self.service.model else None
            ),
        }
        try:
            await self.service.ping_async()
        except MlpipeError as exc:
            error = _as_http(exc)
            reason = error.message if isinstance(error, HttpError) else STORE_UNAVAILABLE
            doc.update(status="not_ready", reason=reason, store_version=None)
            return 503, orjson.dumps(doc)
        doc.update(status="ready", store_version=self.service.store_version)
        return 200, orjson.dumps(doc)

    # -- helpers --------------------------------------------------------------------------

    def _batch_body(self, served: list[Any], *, model: bool = False) -> bytes:
        origin = _origin(served, self.service)  # one version per batch, even mid-switch
        doc: dict[str, Any] = {
            "count": len(served),
            "transform_version": origin.transform_version,
            "results": [s.to_dict(self.transform_version) for s in served],
        }
        if model and origin.model is not None:
            doc["model_version"] = origin.model.binding.model_version
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


_ALLOW = {EP_ONE: b"GET", EP_BATCH: b"GET, POST", EP_PREDICT: b"POST"}
_FIXED = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/info", EP_BATCH, EP_PREDICT}


def _origin(served: list[Any], current: Any) -> Any:
    """The service (live version) that produced ``served``: `mlpipe promote` may have
    switched ``current`` while the request waited for the store."""
    return (served[0].origin if served else None) or current


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
    if isinstance(exc, NoLiveVersion):
        return HttpError(503, "store_unavailable", STORE_EMPTY)
    if isinstance(exc, ServiceUnavailable):  # details are in the server's log, not here
        return HttpError(503, "store_unavailable", STORE_UNAVAILABLE)
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


def _body_too_slow(limit: float) -> HttpError:
    return HttpError(
        408, "request_timeout", f"request body not received within serving.read_timeout = "
        f"{limit:g} s",
    )  # fmt: skip


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


_JSON_HEADERS = [("content-type", _JSON.decode())]
_RSGI_HEADERS = {
    _JSON: [("content-type", _JSON.decode())],
    _TEXT: [("content-type", _TEXT.decode())],
}
