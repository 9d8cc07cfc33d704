"""What the profile agent tells the health server: its readiness and its consumer lag.

faust reports a rebalance through the app's signals: ``on_partitions_revoked`` at its start (the
worker is not ready until it ends), ``on_partitions_assigned`` at its end (ready as far as the group
goes, with partitions or, when there are more workers than partitions, without). A timer sets the
lag of each assigned partition (its end minus the consumer's position) every few seconds; the
series of partitions given up in a rebalance are removed (:class:`~receiptflow.lag.LagGauge`).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import faust

from receiptflow.health import PARTITIONS_ASSIGNED, Readiness
from receiptflow.heartbeat import Heartbeat, counter_total
from receiptflow.lag import LagGauge
from receiptflow.metrics import Metrics

log = logging.getLogger(__name__)

LAG_EVERY = 5.0  # seconds: each report asks the broker for the partitions' ends


def watch(app: faust.App, readiness: Readiness, metrics: Metrics) -> None:
    """Connect the app's rebalance signals to ``readiness`` and report its lag on a timer."""
    gauge = LagGauge(metrics, app.conf.id, Heartbeat("profiles", counter_total(metrics.profile_updates_total)))

    def revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        readiness.mark(PARTITIONS_ASSIGNED, False)

    def assigned(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        readiness.mark(PARTITIONS_ASSIGNED)

    # mode's handler type wants its own signal type for `signal`; these ignore it.
    app.on_partitions_revoked.connect(cast(Any, revoked))
    app.on_partitions_assigned.connect(cast(Any, assigned))

    @app.timer(LAG_EVERY)  # type: ignore[untyped-decorator]  # faust's decorator is not annotated
    async def report_lag() -> None:
        consumer = app.consumer
        partitions = sorted(consumer.assignment())
        if not partitions:
            gauge.update({})
            return
        try:
            ends = await consumer.highwaters(*partitions)
            lags = {}
            for tp in partitions:
                position = await consumer.position(tp)
                end = ends.get(tp)
                if position is not None and end is not None and end >= 0:
                    lags[(tp.topic, tp.partition)] = max(end - position, 0)
        except Exception as exc:  # noqa: BLE001 - lag is a report: never stop the agent over it
            log.debug("profile agent lag not available: %s", exc)
            return
        gauge.update(lags)
