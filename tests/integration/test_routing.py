"""Receive, route and forward against a real Orthanc and real dcmtk clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.dcmtk import StoreSCP, echoscu, storescu
from tests.support.dicomdata import ct_series
from tests.support.files import dataset_bytes
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port, wait_for

pytestmark = pytest.mark.integration

FORWARD_CT = [{"name": "forward-ct", "when": {"Modality": "CT"}, "forward_to": ["pacs"]}]


def pacs(orthanc: Orthanc) -> dict[str, dict[str, object]]:
    return {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}


def delivered_series(node: NodeProcess, series_uid: str) -> bool:
    rows = node.query("SELECT state FROM outbox WHERE series_uid = ?", series_uid)
    return bool(rows) and all(r[0] == "delivered" for r in rows)


def test_storescu_series_is_forwarded_byte_identical(tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "in", 12)
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc)) as node:
        result = storescu(node.port, files)
        assert result.returncode == 0, result.stderr
        wait_for(lambda: orthanc.count_instances() == 12, 30, "12 instances in Orthanc")
        received = orthanc.files_by_sop_uid()
        for path in files:
            sent = path.read_bytes()
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert dataset_bytes(received[uid]) == dataset_bytes(sent)
        assert "rule forward-ct fired" in node.log()
        assert "Test^Patient" not in node.log() and "TEST0001" not in node.log()


def test_compressed_transfer_syntax_is_stored_and_forwarded_without_decoding(
        tmp_path: Path, orthanc: Orthanc) -> None:
    jpeg = Path(get_testdata_file("JPEG2000.dcm"))
    ds = pydicom.dcmread(jpeg)
    rules = [{"name": "forward-all", "when": {}, "forward_to": ["pacs"]}]
    with NodeProcess(tmp_path / "node", rules=rules, destinations=pacs(orthanc)) as node:
        result = storescu(node.port, [jpeg], extra=["--propose-j2k-lossy"])
        assert result.returncode == 0, result.stderr
        wait_for(lambda: orthanc.count_instances() == 1, 30, "the JPEG 2000 instance in Orthanc")
        (received,) = orthanc.files_by_sop_uid().values()
        # storescu re-encodes sequence lengths on the way, so compare with what the node received.
        spooled, stored_syntax = node.query("SELECT path, transfer_syntax FROM instances")[0]
        assert dataset_bytes(received) == dataset_bytes(Path(spooled).read_bytes())
        assert stored_syntax == ds.file_meta.TransferSyntaxUID
        assert pydicom.dcmread(spooled).PixelData == ds.PixelData


def test_orthanc_sends_series_to_node_and_rule_fires(tmp_path: Path) -> None:
    node_port = free_port()
    modalities = {"dicomnode": ["DICOMNODE", "127.0.0.1", node_port]}
    files = ct_series(tmp_path / "in", 6)
    rules = [{"name": "from-orthanc", "when": {"CallingAETitle": "ORTHANC", "Modality": "CT"},
              "forward_to": ["archive"]}]
    with Orthanc(tmp_path / "orthanc", modalities=modalities) as orthanc, \
            StoreSCP(tmp_path / "archive") as archive:
        ids = [orthanc.post("/instances", f.read_bytes())["ID"] for f in files]
        destinations = {"archive": {"host": "127.0.0.1", "port": archive.port, "ae_title": archive.aet}}
        with NodeProcess(tmp_path / "node", rules=rules, destinations=destinations, port=node_port) as node:
            job = orthanc.post("/modalities/dicomnode/store", {"Resources": ids, "Synchronous": True})
            assert job is not None
            wait_for(lambda: len(archive.files()) == 6, 30, "6 instances in the archive")
            assert "rule from-orthanc fired" in node.log()
            calling = node.query("SELECT DISTINCT calling_ae FROM instances")
            assert calling == [("ORTHANC",)]


def test_delivery_resumes_when_destination_comes_back(tmp_path: Path) -> None:
    files = ct_series(tmp_path / "in", 5)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    pacs_port = free_port()
    destinations = {"pacs": {"host": "127.0.0.1", "port": pacs_port, "ae_title": "ORTHANC"}}
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=destinations) as node:
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: node.query("SELECT attempts, last_error FROM outbox WHERE attempts >= 2"), 30,
                 "two failed delivery attempts")
        assert node.query("SELECT state FROM outbox") == [("pending",)]
        with Orthanc(tmp_path / "orthanc", dicom_port=pacs_port) as orthanc:
            wait_for(lambda: delivered_series(node, series_uid), 30, "delivery after Orthanc returned")
            assert orthanc.count_instances() == 5
    assert "retrying in" in node.log()


def test_permanent_refusal_is_recorded_not_retried(tmp_path: Path) -> None:
    files = ct_series(tmp_path / "in", 2)
    # An Orthanc that takes only JPEG baseline refuses our Explicit VR Little Endian CT for good.
    only_jpeg = {"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2.4.50"]}
    with Orthanc(tmp_path / "orthanc", settings=only_jpeg) as orthanc, \
            NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc)) as node:
        assert storescu(node.port, files).returncode == 0
        rows = wait_for(lambda: node.query("SELECT state, last_error, attempts FROM outbox"
                                           " WHERE state != 'pending'"), 30, "the delivery to end")
        state, error, attempts = rows[0]
        assert state == "failed"
        assert "2 instance(s) refused" in error and "does not accept SOP class" in error
        assert attempts == 1
        assert node.query("SELECT state, count(*) FROM outbox_items GROUP BY state") == [("refused", 2)]


def test_sigkill_after_ack_before_completion_delivers_exactly_once(tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "in", 8)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    node = NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc),
                       series={"stable_seconds": 3, "release_grace_seconds": 0})
    node.start()
    try:
        assert storescu(node.port, files).returncode == 0  # every instance acknowledged
        node.kill()
        assert node.query("SELECT state, instance_count FROM series") == [("receiving", 8)]
        assert orthanc.count_instances() == 0
        node.start()
        wait_for(lambda: delivered_series(node, series_uid), 30, "delivery after restart")
    finally:
        assert node.stop() == 0
    assert orthanc.count_instances() == 8
    assert orthanc.new_instance_events() == 8
    assert node.query("SELECT count(*) FROM outbox") == [(1,)]
    assert node.query("SELECT state, count(*) FROM outbox_items GROUP BY state") == [("sent", 8)]


def test_same_instances_twice_are_stored_and_forwarded_once(tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "in", 4)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc)) as node:
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: delivered_series(node, series_uid), 30, "first delivery")
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: node.query("SELECT state FROM series") == [("routed",)], 30, "series settled")
        assert node.query("SELECT count(*) FROM instances") == [(4,)]
        assert node.query("SELECT count(*) FROM outbox_items") == [(4,)]
        spooled = list((node.folder / "var" / "spool").glob("*/*.dcm"))
        assert len(spooled) == 4
    assert orthanc.new_instance_events() == 4


def test_late_instance_reopens_series_and_only_it_is_forwarded(tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "in", 5)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc)) as node:
        assert storescu(node.port, files[:4]).returncode == 0
        wait_for(lambda: delivered_series(node, series_uid), 30, "first part delivered")
        assert storescu(node.port, files[4:]).returncode == 0
        wait_for(lambda: node.query("SELECT count(*) FROM outbox WHERE state = 'delivered'") == [(2,)],
                 30, "the late instance delivered")
        assert node.query("SELECT count(*) FROM outbox_items") == [(5,)]
    assert orthanc.new_instance_events() == 5


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", rules=[]).start()
    assert echoscu(node.port).returncode == 0
    assert node.stop(timeout=15) == 0
    assert "node stopped" in node.log()


def test_rules_check_cli_names_matching_rules(tmp_path: Path) -> None:
    head = ct_series(tmp_path / "head", 2)
    chest = ct_series(tmp_path / "chest", 2, series_description="CHEST", body_part="CHEST")
    out = subprocess.run([sys.executable, "-m", "dicomnode.cli", "rules", "check", "rules/default.yaml",
                          str(tmp_path / "head"), str(chest[0])],
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert "matches emergency-head-ct: run anomaly_triage" in out.stdout
    assert out.stdout.count("no rule matches") == 1
    assert str(len(head)) + " file(s)" in out.stdout


def test_send_cli_delivers_a_folder_and_reports_refusals(tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "series", 3)
    (tmp_path / "series" / "notes.txt").write_text("not DICOM")
    cmd = [sys.executable, "-m", "dicomnode.cli", "send", str(tmp_path / "series"),
           "--to", f"127.0.0.1:{orthanc.dicom_port}", "--aet", orthanc.aet]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sent 3 of 3 file(s), skipped 1 non-DICOM" in out.stdout
    assert orthanc.count_instances() == len(files)

    down = subprocess.run([*cmd[:-4], "--to", f"127.0.0.1:{free_port()}", "--aet", "NOBODY"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 1
    assert "cannot connect to NOBODY" in down.stderr


def test_a_delivered_series_leaves_the_spool_after_retention_and_a_resend_is_forwarded_again(
        tmp_path: Path, orthanc: Orthanc) -> None:
    files = ct_series(tmp_path / "in", 4)
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    retention_days = 10 / 86400  # ten seconds
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs(orthanc),
                     node={"retention_days": retention_days}) as node:
        spool = node.folder / "var" / "spool"
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: delivered_series(node, series_uid), 30, "the delivery")
        assert len(list(spool.glob("*/*.dcm"))) == 4
        wait_for(lambda: not list(spool.glob("*/*.dcm")), 60, "the spool emptied by retention")
        wait_for(lambda: node.query("SELECT count(*) FROM instances") == [(0,)], 10, "the rows purged")
        assert node.query("SELECT count(*) FROM series") == [(0,)]
        assert node.query("SELECT state FROM outbox") == [("delivered",)]  # the history stays
        # the summary is logged once the whole pass is done, a moment after the rows go
        wait_for(lambda: "retention: purged 1 finished series (4 files" in node.log(), 10, "the purge logged")
        assert orthanc.count_instances() == 4
        # The node no longer holds the series: sent again, it is new to it and forwarded again
        # (Orthanc, which has the instances, stores nothing new).
        assert storescu(node.port, files).returncode == 0
        wait_for(lambda: node.query("SELECT state FROM outbox") == [("delivered",)] * 2, 30,
                 "the resend forwarded")
        assert node.query("SELECT count(*) FROM outbox_items") == [(4,)]
    assert orthanc.new_instance_events() == 4
