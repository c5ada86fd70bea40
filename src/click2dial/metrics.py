"""The service's Prometheus metrics, on a registry of its own.

Counters and histograms live in memory per process (Prometheus handles
restarts).  Gauges owned elsewhere are read at scrape time: the store's
(live calls, outbox) are fetched by :meth:`Metrics.refresh` just before a
scrape, because the store is asynchronous and a collector is not; the SIP
endpoint's and the notifier's are read by a collector.

These metrics name every integrator, so they are served on the operator
listener only (:mod:`click2dial.operator`), never on an integrator's port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__

MetricFamily = tuple[str, str, str, list[tuple[dict[str, str], float]]]
"""(name, type, help, [(labels, value)]): a family read at scrape time."""

#: Call setup takes seconds to tens of seconds (a phone rings up to the
#: integrator's ring timeout); the buckets span that.
SETUP_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
#: A webhook answers in milliseconds or times out after seconds.
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Families(Collector):
    """Families produced by a callable at each scrape."""

    def __init__(self, source: Callable[[], Iterable[MetricFamily]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for name, kind, help_text, samples in self.source():
            family: CounterMetricFamily | GaugeMetricFamily
            labels = sorted({key for sample_labels, _ in samples for key in sample_labels})
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for sample_labels, value in samples:
                family.add_metric([sample_labels.get(key, "") for key in labels], value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.placed = Counter(
            "click2dial_calls_placed", "Calls accepted by this node.", ["integrator"],
            registry=registry,
        )  # fmt: skip
        self.ended = Counter(
            "click2dial_calls_ended", "Calls ended on this node.", ["integrator", "end_reason"],
            registry=registry,
        )  # fmt: skip
        self.agent_setup = Histogram(
            "click2dial_call_agent_setup_seconds",
            "From the call request accepted to the agent's answer.",
            ["integrator"], buckets=SETUP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.callee_setup = Histogram(
            "click2dial_call_callee_setup_seconds",
            "From the agent's answer to the callee's answer.",
            ["integrator"], buckets=SETUP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.webhook_latency = Histogram(
            "click2dial_webhook_delivery_seconds",
            "Time a webhook delivery attempt took, by outcome.",
            ["integrator", "outcome"], buckets=WEBHOOK_BUCKETS, registry=registry,
        )  # fmt: skip
        self.live = Gauge(
            "click2dial_calls_live", "Calls not ended yet, per integrator.", ["integrator"],
            registry=registry,
        )  # fmt: skip
        self.outbox = {
            key: Gauge(name, help_text, registry=registry)
            for key, name, help_text in (
                ("pending", "click2dial_outbox_pending", "Notifications not delivered yet."),
                ("delivered", "click2dial_outbox_delivered", "Notifications delivered."),
                ("retries", "click2dial_outbox_retrying",
                 "Pending notifications that failed once."),
                ("oldest_pending_age", "click2dial_outbox_oldest_pending_seconds",
                 "Age of the oldest undelivered notification."),
            )
        }  # fmt: skip
        Info("click2dial_build", "The running version.", registry=registry).info(
            {"version": __version__}
        )
        ProcessCollector(registry=registry)

    def call_placed(self, integrator: str) -> None:
        self.placed.labels(integrator).inc()

    def call_ended(self, integrator: str, end_reason: str) -> None:
        self.ended.labels(integrator, end_reason).inc()

    def add_families(self, source: Callable[[], Iterable[MetricFamily]]) -> None:
        """Serve the families ``source`` returns at each scrape."""
        self.registry.register(_Families(source))

    def refresh(self, live: dict[str, int], outbox: dict[str, Any]) -> None:
        """Set the store's gauges (called just before a scrape)."""
        for integrator, count in live.items():
            self.live.labels(integrator).set(count)
        for key, gauge in self.outbox.items():
            gauge.set(float(outbox.get(key) or 0.0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def render(families: Iterable[MetricFamily]) -> str:
    """``families`` → exposition text, every value exactly (a quick view
    for tools and tests; the service serves :meth:`Metrics.exposition`)."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


__all__ = ["MetricFamily", "Metrics", "render"]
