"""Read a Prometheus /metrics endpoint with prometheus_client's own parser."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


class MetricsClient:
    def __init__(self, url: str) -> None:
        self.url = url

    def scrape(self) -> list[tuple[str, dict[str, str], float]]:
        with urllib.request.urlopen(self.url, timeout=2) as r:
            text = r.read().decode()
        out: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.append((s.name, dict(s.labels), float(s.value)))
        return out

    def get(self, name: str, labels: Mapping[str, str] | None = None, default: float | None = None) -> float | None:
        """Sum of the samples named `name` whose labels include `labels`."""
        want = dict(labels or {})
        total, found = 0.0, False
        for n, lab, v in self.scrape():
            if n == name and all(lab.get(k) == val for k, val in want.items()):
                total += v
                found = True
        return total if found else default

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        v = self.get(name, labels)
        if v is None:
            raise KeyError(f"metric {name}{dict(labels or {})} not exported by {self.url}")
        return v

    def wait_for(self, name: str, labels: Mapping[str, str] | None, predicate, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        last: float | None = None  # the last value seen (kept when the endpoint goes away)
        state = "never scraped"
        while time.monotonic() < deadline:
            try:
                value = self.get(name, labels)
            except OSError as exc:
                state = f"unreachable ({exc.__class__.__name__})"
            else:
                state = "exported" if value is not None else "not exported"
                if value is not None:
                    last = value
                    if predicate(value):
                        return value
            time.sleep(0.1)
        raise TimeoutError(
            f"{name}{dict(labels or {})} never satisfied the condition in {timeout_s:.0f} s "
            f"(last value seen={last}; at the deadline the metric was {state} at {self.url})"
        )


class MetricSampler:
    """Samples one metric every `interval_s` in a thread; `.samples` holds (t, value)."""

    def __init__(self, client: MetricsClient, name: str, labels: Mapping[str, str] | None = None,
                 interval_s: float = 0.1) -> None:
        self.client, self.name, self.labels, self.interval_s = client, name, labels, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = self.client.get(self.name, self.labels)
                if v is not None:
                    self.samples.append((time.monotonic(), v))
            except OSError:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MetricSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
