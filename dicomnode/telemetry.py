"""The node's Prometheus metrics, on a registry owned by the node (never the global default).

Every metric is prefixed ``dicomnode_``. Labels are kept to values the configuration bounds
(destination and rule names, generator and backend names, fixed outcomes): never UIDs, AE
titles of arbitrary peers or anything patient-related.

| attribute | metric | type | labels |
| --- | --- | --- | --- |
| `instances_received` | `dicomnode_instances_received_total` | counter | - |
| `associations` | `dicomnode_associations_total` | counter | `result` (accepted, rejected) |
| `series_completed` | `dicomnode_series_completed_total` | counter | - |
| `rules_fired` | `dicomnode_rules_fired_total` | counter | `rule` |
| `jobs` | `dicomnode_jobs_total` | counter | `generator`, `outcome` (done, failed) |
| `inference_seconds` | `dicomnode_inference_seconds` | histogram | `generator`, `backend` |
| `outbox_pending` | `dicomnode_outbox_pending` | gauge | `destination` |
| `delivery_failures` | `dicomnode_delivery_failures_total` | counter | `destination` |
| `receive_to_result_seconds` | `dicomnode_receive_to_result_seconds` | histogram | - |
| `series_purged` | `dicomnode_series_purged_total` | counter | - |
| `disk_free_bytes` | `dicomnode_disk_free_bytes` | gauge | - |

`receive_to_result_seconds` runs from the first instance of a series arriving to its
result being on the worklist: the delay a radiologist actually experiences.
`disk_free_bytes` is the free space under the data folder, read on every retention pass (at
least once a minute); below `node.min_free_mb` the listener refuses instances.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

ASSOCIATION_RESULTS = ("accepted", "rejected")
JOB_OUTCOMES = ("done", "failed")

# Inference on one series: tens of milliseconds (TensorRT, small series) to minutes (CPU).
_INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Arrival to result includes series quiescence (default 10 s) and queueing.
_LATENCY_BUCKETS = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0)


class Telemetry:
    """All metrics of one node; other modules call e.g. ``telemetry.instances_received.inc()``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances_received = Counter(
            "dicomnode_instances_received", "DICOM instances stored and answered with success", registry=r
        )
        self.associations = Counter(
            "dicomnode_associations", "Association requests by result", ["result"], registry=r
        )
        self.series_completed = Counter(
            "dicomnode_series_completed", "Series that were judged complete", registry=r
        )
        self.rules_fired = Counter("dicomnode_rules_fired", "Rule matches by rule name", ["rule"], registry=r)
        self.jobs = Counter(
            "dicomnode_jobs", "Generator jobs finished, by generator and outcome", ["generator", "outcome"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "dicomnode_inference_seconds", "Engine time per job, by generator and backend",
            ["generator", "backend"], buckets=_INFERENCE_BUCKETS, registry=r,
        )
        self.outbox_pending = Gauge(
            "dicomnode_outbox_pending", "Deliveries waiting in the outbox, by destination", ["destination"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "dicomnode_delivery_failures", "Failed delivery attempts, by destination", ["destination"],
            registry=r,
        )
        self.series_purged = Counter(
            "dicomnode_series_purged", "Finished series removed from the spool by retention", registry=r
        )
        self.disk_free_bytes = Gauge(
            "dicomnode_disk_free_bytes", "Free space under the data folder at the last retention pass",
            registry=r,
        )
        self.receive_to_result_seconds = Histogram(
            "dicomnode_receive_to_result_seconds", "Seconds from a series' first instance to its result",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        # Known label values are created up front so that dashboards see zeros, not gaps.
        for result in ASSOCIATION_RESULTS:
            self.associations.labels(result=result)

    def association(self, result: Literal["accepted", "rejected"]) -> None:
        self.associations.labels(result=result).inc()

    def job_finished(self, generator: str, outcome: Literal["done", "failed"]) -> None:
        self.jobs.labels(generator=generator, outcome=outcome).inc()

    def observe_inference(self, generator: str, backend: str, seconds: float) -> None:
        self.inference_seconds.labels(generator=generator, backend=backend).observe(seconds)

    def set_outbox_pending(self, backlog: dict[str, int]) -> None:
        """Set the backlog gauge for every destination given (missing ones are left as they were)."""
        for destination, count in backlog.items():
            self.outbox_pending.labels(destination=destination).set(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
