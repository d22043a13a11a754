"""`mlpipe push`: append events to a source's stream, each checked against its contract.

Good events are XADDed in input order (pipelined); rejected ones go to the dead-letter
stream with their failed check ids (reason ``invalid``). Nothing is dropped: ``read`` =
``pushed`` + ``dead_lettered``, and any dead-lettered event makes the result fail its gate
(exit 1, like `validate`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import DataCheckFailed

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class PushResult:
    source: str
    stream: str
    dead_letter: str
    read: int
    pushed: int
    dead_lettered: int
    failed_checks: dict[str, int]
    first_id: str | None
    last_id: str | None
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)  # first rejected events

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "stream": self.stream,
            "dead_letter": self.dead_letter,
            "read": self.read,
            "pushed": self.pushed,
            "dead_lettered": self.dead_lettered,
            "failed_checks": dict(sorted(self.failed_checks.items())),
            "first_id": self.first_id,
            "last_id": self.last_id,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.read / self.seconds) if self.seconds else None,
            "examples": self.examples,
        }

    def raise_for_status(self) -> None:
        if self.dead_lettered:
            top = max(self.failed_checks.items(), key=lambda kv: (kv[1], kv[0]))
            raise DataCheckFailed(
                f"{self.dead_lettered} of {self.read} events failed their checks and went to "
                f"{self.dead_letter} (most: {top[0]} x{top[1]})",
                hint=f"inspect them with: redis-cli XRANGE {self.dead_letter} - +",
            )


def push(project: Project, *, source: str, path: Path | None = None) -> PushResult:
    """Check and append the events of ``path`` (None: JSON lines on stdin)."""
    from mlpipe_cli.streaming.events import dump_event, encode_events, read_events
    from mlpipe_cli.streaming.plan import build_plan
    from mlpipe_cli.streaming.source import RedisStreamSource, redis_client

    config = project.config
    plan = build_plan(config, source)
    client = redis_client(plan.url, plan.password)
    stream = RedisStreamSource(client, plan.stream.key, url=plan.url, password=plan.password)
    dead = RedisStreamSource(client, plan.stream.dead_letter_key, url=plan.url,
                             password=plan.password)  # fmt: skip
    started = time.perf_counter()
    read = pushed = rejected_total = 0
    failed: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    first_id = last_id = None
    try:
        for batch in read_events(config, source, path):
            good = batch.good
            if good.height:
                ids = stream.append(encode_events(config, plan, good))
                first_id = first_id or ids[0]
                last_id = ids[-1]
                pushed += len(ids)
            if batch.rejected:
                letters = []
                for item in batch.rejected:
                    record = (
                        item.record if isinstance(item.record, str) else dump_event(item.record)
                    )
                    letters.append({"reason": "invalid", "checks": json.dumps(item.checks),
                                    "row": str(item.row), "d": record, "source": source})  # fmt: skip
                    for check in item.checks:
                        failed[check] = failed.get(check, 0) + 1
                    if len(examples) < 5:
                        examples.append({"row": item.row, "checks": item.checks})
                dead.append(letters)
                rejected_total += len(letters)
            read += good.height + len(batch.rejected)
    finally:
        client.close()
    return PushResult(
        source=source,
        stream=plan.stream.key,
        dead_letter=plan.stream.dead_letter_key,
        read=read,
        pushed=pushed,
        dead_lettered=rejected_total,
        failed_checks=failed,
        first_id=first_id,
        last_id=last_id,
        seconds=time.perf_counter() - started,
        examples=examples,
    )
