"""Bad input and bad peers never take the node down, and every refusal carries a standard status."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomnode.net import scu
from tests.support.dcmtk import echoscu, storescu
from tests.support.dicomdata import ct_series
from tests.support.node import NodeProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import wait_for

pytestmark = pytest.mark.integration

FORWARD_CT = [{"name": "forward-ct", "when": {"Modality": "CT"}, "forward_to": ["pacs"]}]


def send_raw(port: int, paths: list[Path]) -> list[tuple[Path, str]]:
    """Send files exactly as they are on disk (storescu would refuse to send broken ones)."""
    files = [scu.describe_file(p) for p in paths]
    outcomes: list[tuple[Path, str]] = []
    scu.send_files(scu.Peer("127.0.0.1", port, "DICOMNODE", "FUZZER"), files,
                   lambda i: outcomes.append((paths[i], "sent")),
                   lambda i, why: outcomes.append((paths[i], why)))
    return outcomes


def corrupt_copy(src: Path, dst: Path, seed: int) -> Path:
    """A valid file with random bytes written over part of its data set."""
    import numpy as np

    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    start = 400 + int(rng.integers(0, 400))
    data[start:start + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_malformed_files_leave_node_serving_and_next_series_flows(tmp_path: Path, orthanc: Orthanc) -> None:
    names = ("MR_truncated.dcm", "rtplan_truncated.dcm", "badVR.dcm")
    bad = [Path(get_testdata_file(name)) for name in names]
    good_template = ct_series(tmp_path / "template", 1)[0]
    bad += [corrupt_copy(good_template, tmp_path / f"corrupt{i}.dcm", seed=i) for i in range(5)]
    pacs = {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}
    with NodeProcess(tmp_path / "node", rules=FORWARD_CT, destinations=pacs) as node:
        outcomes = send_raw(node.port, bad)
        assert len(outcomes) == len(bad)  # every file got an answer: none silently dropped
        refused = [why for _, why in outcomes if why != "sent"]
        assert refused, "at least the truncated files must be refused"
        assert all("0xC000" in why for why in refused), refused
        quarantined = list((node.folder / "var" / "quarantine").glob("*.txt"))
        assert len(quarantined) == len(refused)
        assert echoscu(node.port).returncode == 0

        good = ct_series(tmp_path / "good", 5)
        assert storescu(node.port, good).returncode == 0
        uids = {pydicom.dcmread(p).SOPInstanceUID for p in good}
        wait_for(lambda: uids <= set(orthanc.files_by_sop_uid()), 30, "the good series in Orthanc")


def test_uid_over_64_characters_is_answered_with_a_failure_status(tmp_path: Path) -> None:
    long_uid = "1.2.826.0.1.3680043.8.498." + "1" * 60  # 86 characters
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = long_uid
    with NodeProcess(tmp_path / "node", rules=[]) as node:
        ae = AE(ae_title="LONGUID")
        ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
        ae.add_requested_context(Verification)
        from pynetdicom import _config

        previous = _config.VALIDATORS["UI"]
        _config.VALIDATORS["UI"] = lambda value: (True, "")  # let the test client send it
        try:
            assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
            assert assoc.is_established
            rsp = assoc.send_c_store(ds)
            assert assoc.is_established  # the association survives the bad instance
            ok = assoc.send_c_echo()
            assoc.release()
        finally:
            _config.VALIDATORS["UI"] = previous
        assert rsp.Status == 0xC000
        assert "64" in rsp.ErrorComment
        assert ok.Status == 0x0000
        assert node.query("SELECT count(*) FROM instances") == [(0,)]
        assert len(list((node.folder / "var" / "quarantine").glob("*.dcm"))) == 1


def test_unknown_calling_ae_is_rejected_when_allowed_peers_is_set(tmp_path: Path) -> None:
    peers = [{"ae_title": "CT01", "host": "127.0.0.1"}, {"ae_title": "ELSEWHERE", "host": "10.255.255.1"}]
    with NodeProcess(tmp_path / "node", rules=[], node={"allowed_peers": peers}) as node:
        assert echoscu(node.port, calling="CT01").returncode == 0
        unknown = echoscu(node.port, calling="INTRUDER")
        assert unknown.returncode != 0
        assert "Calling AE Title Not Recognized" in unknown.stderr + unknown.stdout
        wrong_host = echoscu(node.port, calling="ELSEWHERE")
        assert wrong_host.returncode != 0
        wrong_called = echoscu(node.port, calling="CT01", called="NOTME")
        assert wrong_called.returncode != 0
        assert "Called AE Title Not Recognized" in wrong_called.stderr + wrong_called.stdout
        assert "rejected association from INTRUDER" in node.log()


def test_full_disk_answers_out_of_resources(tmp_path: Path) -> None:
    files = ct_series(tmp_path / "in", 1)
    huge_floor = 2**40  # more MiB free than any disk has: the node behaves as if the disk were full
    with NodeProcess(tmp_path / "node", rules=[], node={"min_free_mb": huge_floor}) as node:
        result = storescu(node.port, files, extra=["-v"])
        assert result.returncode != 0
        assert "Refused: OutOfResources" in result.stderr
        assert node.query("SELECT count(*) FROM instances") == [(0,)]
        assert echoscu(node.port).returncode == 0


def test_dataset_written_as_received(tmp_path: Path) -> None:
    """The spool holds the sender's encoding: the node does not decode and re-encode."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    src = tmp_path / "ct_small.dcm"
    src.write_bytes(buffer.getvalue())
    with NodeProcess(tmp_path / "node", rules=[]) as node:
        assert send_raw(node.port, [src]) == [(src, "sent")]
        (spooled,) = node.query("SELECT path FROM instances")[0]
        from tests.support.files import dataset_bytes

        assert dataset_bytes(Path(spooled).read_bytes()) == dataset_bytes(src.read_bytes())
