"""`dicomnode worklist` output and the Telemetry registry."""

from __future__ import annotations

import io
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dicomnode.config import Config, NodeConfig
from dicomnode.telemetry import Telemetry
from dicomnode.worklist.commands import cmd_worklist, human_duration
from dicomnode.worklist.store import WorklistStore
from tests.unit.worklist.helpers import triage_entry


def test_cmd_worklist_prints_the_ordered_list_without_phi(tmp_path: Path) -> None:
    store = WorklistStore(tmp_path / "index.sqlite3")
    now = time.time()
    store.record_result(triage_entry("1.2.3.1", "routine", 10.0, arrived_at=now - 120, accession_number="R1"))
    store.record_result(triage_entry("1.2.3.2", "critical", 90.0, arrived_at=now - 30, accession_number="C1",
                                     warnings=("a slice may be missing",)))
    store.record_failure("1.2.3.3", "engine crashed", accession_number="F1", arrived_at=now - 4000)
    store.acknowledge("1.2.3.1", "dr a")
    store.close()
    out = io.StringIO()
    assert cmd_worklist(Config(node=NodeConfig(data_dir=tmp_path)), out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["CATEGORY", "SCORE", "WAITING"]
    assert [line.split()[0] for line in lines[1:]] == ["critical", "FAILED", "routine"]
    assert "C1" in lines[1] and "90.0" in lines[1] and "[! a slice may be missing]" in lines[1]
    assert "engine crashed" in lines[2] and "1 h 06 min" in lines[2]
    assert "dr a" in lines[3] and "2 min" in lines[3]
    assert "Doe" not in out.getvalue() and "PID-1" not in out.getvalue()


def test_cmd_worklist_without_a_database_creates_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    data_dir = tmp_path / "var"
    assert cmd_worklist(Config(node=NodeConfig(data_dir=data_dir)), out) == 0
    assert "no worklist yet" in out.getvalue()
    assert not data_dir.exists()


def test_human_duration() -> None:
    assert [human_duration(s) for s in (0, 59.9, 60, 3599, 3600, 3660, 86400 + 7200)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h 00 min", "1 h 01 min", "1 d 2 h"]


def test_telemetry_exposes_every_documented_metric() -> None:
    t = Telemetry()
    t.instances_received.inc()
    t.association("accepted")
    t.series_completed.inc()
    t.rules_fired.labels(rule="emergency-head-ct").inc()
    t.job_finished("anomaly_triage", "done")
    t.observe_inference("anomaly_triage", "onnxruntime", 1.5)
    t.set_outbox_pending({"pacs": 4})
    t.delivery_failures.labels(destination="pacs").inc()
    t.receive_to_result_seconds.observe(42.0)
    body, content_type = t.render()
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("dicomnode_instances_received_total", ())] == 1
    assert samples[("dicomnode_associations_total", (("result", "accepted"),))] == 1
    assert samples[("dicomnode_associations_total", (("result", "rejected"),))] == 0
    assert samples[("dicomnode_series_completed_total", ())] == 1
    assert samples[("dicomnode_rules_fired_total", (("rule", "emergency-head-ct"),))] == 1
    assert samples[("dicomnode_jobs_total", (("generator", "anomaly_triage"), ("outcome", "done")))] == 1
    assert samples[("dicomnode_inference_seconds_count",
                    (("backend", "onnxruntime"), ("generator", "anomaly_triage")))] == 1
    assert samples[("dicomnode_outbox_pending", (("destination", "pacs"),))] == 4
    assert samples[("dicomnode_delivery_failures_total", (("destination", "pacs"),))] == 1
    assert samples[("dicomnode_receive_to_result_seconds_sum", ())] == 42.0


def test_two_nodes_do_not_share_metrics() -> None:
    first, second = Telemetry(), Telemetry()
    first.instances_received.inc(5)
    assert b"dicomnode_instances_received_total 0.0" in second.render()[0]
