"""The reward server's counters and histograms, written in Prometheus' text format.

No registry is global: each server (each Ray Serve replica) has its own :class:`Metrics`, so
tests and replicas do not share numbers.

>>> m = Metrics()
>>> m.count("prefsmith_requests_total", route="/score", status="200")
>>> m.observe("prefsmith_batch_items", 3)
>>> text = m.render()
>>> 'prefsmith_requests_total{route="/score",status="200"} 1' in text
True
>>> 'prefsmith_batch_items_bucket{le="4"} 1' in text, "prefsmith_batch_items_sum 3" in text
(True, True)
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

#: Latency buckets in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets of sizes (items or requests per batch).
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

#: Each metric's help line and type; names not listed here are refused.
METRICS: dict[str, tuple[str, str]] = {
    "prefsmith_requests_total": ("counter", "HTTP requests answered, by route and status."),
    "prefsmith_items_total": ("counter", "Responses scored (one per query or row response)."),
    "prefsmith_tokens_total": ("counter", "Tokens of the scored items (prompt and response)."),
    "prefsmith_errors_total": ("counter", "Failed requests, by kind (client, auth, engine)."),
    "prefsmith_batches_total": ("counter", "Scoring batches run."),
    "prefsmith_in_flight": ("gauge", "Requests being answered now."),
    "prefsmith_batch_items": ("histogram", "Items (scored responses) per scoring batch."),
    "prefsmith_batch_requests": ("histogram", "Requests sharing one scoring batch."),
    "prefsmith_request_latency_seconds": ("histogram", "Time to answer a request, by route."),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Integers without a decimal point, as Prometheus writes them.

    >>> _number(3.0), _number(0.25)
    ('3', '0.25')
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def add(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Counters, gauges and histograms, safe to update from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], _Histogram]] = defaultdict(
            dict
        )

    @staticmethod
    def _check(name: str, kind: str) -> None:
        if METRICS.get(name, ("",))[0] not in kind:
            raise KeyError(f"{name} is not a {kind} of METRICS")

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        """Add ``value`` to a counter or gauge (negative for a gauge going down)."""
        self._check(name, "counter gauge")
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Add one observation to a histogram."""
        self._check(name, "histogram")
        buckets = LATENCY_BUCKETS if name.endswith("_seconds") else SIZE_BUCKETS
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._histograms[name].setdefault(key, _Histogram(buckets)).add(value)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's value (0 if never counted)."""
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0)

    def mean(self, name: str, **labels: str) -> float:
        """A histogram's mean (NaN if empty)."""
        with self._lock:
            h = self._histograms[name].get(tuple(sorted(labels.items())))
            return h.total / h.n if h and h.n else float("nan")

    def render(self) -> str:
        """Every metric in Prometheus' text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in METRICS.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind != "histogram":
                    for key, value in sorted(self._values[name].items()):
                        lines.append(f"{name}{_labels(dict(key))} {_number(value)}")
                    continue
                for key, h in sorted(self._histograms[name].items()):
                    labels = dict(key)
                    for bound, n in zip(h.buckets, h.counts, strict=True):
                        le = _labels({**labels, "le": _number(bound)})
                        lines.append(f"{name}_bucket{le} {n}")
                    lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {h.n}")
                    lines.append(f"{name}_sum{_labels(labels)} {_number(h.total)}")
                    lines.append(f"{name}_count{_labels(labels)} {h.n}")
        return "\n".join(lines) + "\n"
