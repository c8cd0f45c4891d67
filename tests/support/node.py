"""The node as users run it: `dicomnode serve --config FILE` in a child process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port, port_open, wait_for


class NodeProcess:
    def __init__(self, folder: Path, *, rules: list[dict[str, Any]],
                 destinations: dict[str, Any] | None = None, ae_title: str = "DICOMNODE",
                 port: int | None = None, **sections: Any) -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = port or free_port()
        self.config_path = folder / "node.yaml"
        self.log_path = folder / "node.log"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}))
        node = {"ae_title": ae_title, "host": "127.0.0.1", "port": self.port, "data_dir": "var",
                "min_free_mb": 16}
        node.update(sections.pop("node", {}))
        series = {"stable_seconds": 2, "release_grace_seconds": 0.5, "poll_seconds": 0.1}
        series.update(sections.pop("series", {}))
        outbox = {"retry_start_seconds": 0.5, "retry_max_seconds": 2, "timeout_seconds": 10}
        outbox.update(sections.pop("outbox", {}))
        self.web_port = free_port()
        web = {"host": "127.0.0.1", "port": self.web_port}
        web.update(sections.pop("web", {}))
        config = {"node": node, "series": series, "outbox": outbox, "rules": "rules.yaml",
                  "destinations": destinations or {}, "web": web, **sections}
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def db_path(self) -> Path:
        return self.folder / "var" / "index.sqlite3"

    def start(self) -> NodeProcess:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=dict(os.environ),
        )
        wait_for(lambda: self._alive() and port_open(self.port), 30, "the node to listen")
        return self

    def _alive(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"node exited with {self._process.returncode}:\n{self.log()[-3000:]}")
        return True

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the clean shutdown users get from Ctrl-C or systemd."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout)
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()
