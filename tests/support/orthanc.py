"""A real Orthanc (Debian's binary) on free loopback ports, with its own storage folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, port_open, wait_for

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def orthanc_available() -> bool:
    return os.access(ORTHANC_BINARY, os.X_OK)


class Orthanc:
    def __init__(self, folder: Path, *, aet: str = "ORTHANC", modalities: dict[str, list[Any]] | None = None,
                 dicom_port: int | None = None, settings: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}
        self.settings = settings or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test-orthanc",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "Plugins": [],
            "StorageCompression": False,
            "OverwriteInstances": False,
            "ConcurrentJobs": 2,
            "HttpsCACertificates": "",
            "StableAge": 1,
            **self.settings,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        env = dict(os.environ, TCP_NODELAY="1")
        log = (self.folder / "orthanc.log").open("wb")
        self._process = subprocess.Popen([ORTHANC_BINARY, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.folder)
        wait_for(lambda: self._alive_and(lambda: port_open(self.http_port) and port_open(self.dicom_port)),
                 30, "Orthanc to listen")
        return self

    def _alive_and(self, check: Any) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            log = (self.folder / "orthanc.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Orthanc exited with {self._process.returncode}:\n{log}")
        return bool(check())

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST ------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as rsp:
            body = rsp.read()
        return json.loads(body) if rsp.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: Any) -> Any:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=120) as rsp:
            return json.loads(rsp.read() or b"null")

    def instance_ids(self) -> list[str]:
        return list(self.get("/instances"))

    def count_instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def instance_file(self, orthanc_id: str) -> bytes:
        return bytes(self.get(f"/instances/{orthanc_id}/file"))

    def files_by_sop_uid(self) -> dict[str, bytes]:
        out = {}
        for oid in self.instance_ids():
            tags = self.get(f"/instances/{oid}/simplified-tags")
            out[tags["SOPInstanceUID"]] = self.instance_file(oid)
        return out

    def new_instance_events(self) -> int:
        """How many instances Orthanc stored as new (a duplicate C-STORE adds none)."""
        count, since = 0, 0
        while True:
            page = self.get(f"/changes?since={since}&limit=1000")
            count += sum(1 for c in page["Changes"] if c["ChangeType"] == "NewInstance")
            if page["Done"]:
                return count
            since = page["Last"]
