"""Prometheus text exposition for the feature server, without a client library.

Counters are plain Python ints mutated on the event-loop thread (one writer per process), so
no locking is needed on the request path; the log writer thread owns its own counters and
the exposition reads them (an int read is atomic under the GIL).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

# Seconds. Sub-millisecond resolution where a healthy server lives (Feast's smallest is 5 ms).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

ENDPOINTS: tuple[str, ...] = (
    "/features/{entity_id}",
    "/features",
    "/predict",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/info",
    "other",
)
# The endpoints that look features up: their latency is the serving SLO's (mlpipe slo).
FEATURE_ENDPOINTS: tuple[str, ...] = ("/features/{entity_id}", "/features", "/predict")


class Histogram:
    """Per-bucket counts (non-cumulative internally), a sum and a count."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # last slot: +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


class Metrics:
    """Everything /metrics reports for this process."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {name: Histogram() for name in ENDPOINTS}
        self.cold_starts = 0
        self.store_errors = 0
        self.entities_served = 0
        self.predictions = 0
        self.coalesced_calls = 0
        self.coalesced_entities = 0
        self.info: dict[str, str] = {}
        # Filled in by the server: callables read at exposition time.
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}
        # whole metric families rendered elsewhere (stream lag: streaming/status.py)
        self.sections: list[Callable[[], list[str]]] = []

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency[endpoint].observe(seconds)

    def latency_snapshot(self, endpoints: tuple[str, ...] = FEATURE_ENDPOINTS) -> dict:
        """The endpoints' histograms merged, as the run ledger stores them
        (``ledger.write_serving_snapshot``): bucket upper bounds, counts per bucket with +Inf
        last, and the sum of seconds."""
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        total = 0.0
        for endpoint in endpoints:
            hist = self.latency[endpoint]
            for i, count in enumerate(list(hist.counts)):  # a copy: the loop thread writes
                counts[i] += count
            total += hist.sum
        return {"buckets": list(LATENCY_BUCKETS), "counts": counts, "sum": total}

    def render(self) -> str:
        lines: list[str] = []
        add = lines.append
        add("# HELP mlpipe_serve_requests_total HTTP requests by endpoint and status code.")
        add("# TYPE mlpipe_serve_requests_total counter")
        for (endpoint, status), value in sorted(self.requests.items()):
            add(f'mlpipe_serve_requests_total{{endpoint="{endpoint}",code="{status}"}} {value}')
        add("# HELP mlpipe_serve_request_duration_seconds Time in the application per request.")
        add("# TYPE mlpipe_serve_request_duration_seconds histogram")
        for endpoint in ENDPOINTS:
            hist = self.latency[endpoint]
            running = 0
            for bound, count in zip(LATENCY_BUCKETS, hist.counts, strict=False):
                running += count
                add(
                    f'mlpipe_serve_request_duration_seconds_bucket{{endpoint="{endpoint}",'
                    f'le="{_fmt(bound)}"}} {running}'
                )
            running += hist.counts[-1]
            add(
                f'mlpipe_serve_request_duration_seconds_bucket{{endpoint="{endpoint}",'
                f'le="+Inf"}} {running}'
            )
            add(f'mlpipe_serve_request_duration_seconds_sum{{endpoint="{endpoint}"}} {hist.sum!r}')
            add(f'mlpipe_serve_request_duration_seconds_count{{endpoint="{endpoint}"}} {running}')
        for name, help_text, value in (
            ("mlpipe_serve_cold_starts_total", "Entities served with cold-start defaults.",
             self.cold_starts),
            ("mlpipe_serve_store_errors_total", "Online-store calls that failed.",
             self.store_errors),
            ("mlpipe_serve_entities_total", "Entities served (one per feature vector).",
             self.entities_served),
            ("mlpipe_serve_predictions_total", "Model scores returned.", self.predictions),
            ("mlpipe_serve_coalesced_calls_total",
             "Store calls that served several concurrent GET /features/{id} at once.",
             self.coalesced_calls),
            ("mlpipe_serve_coalesced_entities_total",
             "Entities looked up through coalesced store calls.", self.coalesced_entities),
        ):  # fmt: skip
            _counter(add, name, help_text, value)
        for name, (help_text, read) in sorted(self.counters.items()):
            _counter(add, name, help_text, read())
        for name, (help_text, read) in sorted(self.gauges.items()):
            add(f"# HELP {name} {help_text}")
            add(f"# TYPE {name} gauge")
            add(f"{name} {_fmt(read())}")
        for section in self.sections:
            lines.extend(section())
        if self.info:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.info.items()))
            add("# HELP mlpipe_serve_info Versions this process serves.")
            add("# TYPE mlpipe_serve_info gauge")
            add(f"mlpipe_serve_info{{{labels}}} 1")
        return "\n".join(lines) + "\n"


def _counter(add: Callable[[str], None], name: str, help_text: str, value: float) -> None:
    add(f"# HELP {name} {help_text}")
    add(f"# TYPE {name} counter")
    add(f"{name} {_fmt(value)}")


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
