"""Prometheus text exposition of the service's counters and gauges.

Counters live in memory per process (Prometheus handles restarts); gauges
are read at scrape time from their owners: live calls and the outbox from
the store, SIP state from the endpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Metrics:
    def __init__(self) -> None:
        self.calls_ended: Counter[tuple[str, str]] = Counter()
        self.calls_placed: Counter[str] = Counter()

    def call_placed(self, integrator: str) -> None:
        self.calls_placed[integrator] += 1

    def call_ended(self, integrator: str, end_reason: str) -> None:
        self.calls_ended[(integrator, end_reason)] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    families: Iterable[tuple[str, str, str, list[tuple[dict[str, str], float]]]],
) -> str:
    """``families``: (name, type, help, [(labels, value)]) → exposition text."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(lines) + "\n"
