"""dcmtk's command-line peers: storescu / echoscu as clients, storescp as a destination."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.ports import free_port, port_open, wait_for


def dcmtk_available() -> bool:
    return all(shutil.which(tool) for tool in ("storescu", "echoscu", "storescp"))


def storescu(port: int, files: list[Path], *, called: str = "DICOMNODE", calling: str = "STORESCU",
             extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["storescu", "-aet", calling, "-aec", called, *(extra or []), "127.0.0.1", str(port)]
    cmd += [str(f) for f in files]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TCP_NODELAY="1"))


def echoscu(port: int, *, called: str = "DICOMNODE",
            calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)


class StoreSCP:
    """dcmtk's storescp writing every received instance into a folder."""

    def __init__(self, folder: Path, *, aet: str = "ARCHIVE", port: int | None = None) -> None:
        self.folder = folder
        self.aet = aet
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            ["storescp", "-aet", self.aet, "-od", str(self.folder), "+B", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"),
        )
        wait_for(lambda: port_open(self.port), 20, "storescp to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


# dcmtk's encoders, by the transfer syntax they write (lossless only: the pixels must survive).
ENCODERS = {
    "JPEG Lossless SV1": ["dcmcjpeg", "+e1"],
    "JPEG Lossless": ["dcmcjpeg", "+el"],
    "JPEG-LS Lossless": ["dcmcjpls", "+el"],
    "RLE Lossless": ["dcmcrle"],
}


def encode(files: list[Path], folder: Path, syntax: str) -> list[Path]:
    """Copies of `files` in `folder`, compressed by dcmtk into `syntax` (a key of ENCODERS)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for source in files:
        target = folder / source.name
        subprocess.run([*ENCODERS[syntax], str(source), str(target)], check=True, capture_output=True,
                       timeout=60)
        out.append(target)
    return out
