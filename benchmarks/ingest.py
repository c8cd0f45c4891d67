"""C-STORE ingest throughput of the node against pynetdicom storescp, dcmtk storescp and Orthanc.

Every receiver is fed by dcmtk `storescu` (TCP_NODELAY=1): all N instances on one association,
then N/P instances on each of P parallel associations; a fresh receiver with an empty store per
measurement, counted afterwards. Then the node's resident memory over one large series.

    .venv/bin/python benchmarks/ingest.py [--count 500] [--parallel 4] [--rows 512] [--skip-orthanc]
                                          [--memory-count 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pynetdicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tests.support.dicomdata import ct_series  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.orthanc import ORTHANC_BINARY, Orthanc, orthanc_available  # noqa: E402
from tests.support.ports import free_port, port_open, wait_for  # noqa: E402

NODELAY = dict(os.environ, TCP_NODELAY="1")
PDU = 262144  # the node's default node.max_pdu_size; baselines get the same (dcmtk: its maximum)
NODE_SERIES = {"stable_seconds": 3600, "release_grace_seconds": 1800, "poll_seconds": 1.0}


@dataclass
class Target:
    port: int
    aet: str
    pid: int
    received: Callable[[], int]


@contextmanager
def node_receiver(folder: Path) -> Iterator[Target]:
    node = NodeProcess(folder, rules=[], destinations={}, series=NODE_SERIES)
    spool = folder / "var" / "spool"

    def received() -> int:
        indexed = node.query("SELECT COUNT(*) FROM instances")[0][0]
        return min(int(indexed), len(list(spool.glob("*/*.dcm"))))

    try:
        node.start()
        assert node._process is not None
        yield Target(node.port, node.ae_title, node._process.pid, received)
    finally:
        try:
            node.stop(30)
        except subprocess.TimeoutExpired:
            node.kill()


@contextmanager
def process_receiver(cmd: list[str], port: int, out: Path, what: str) -> Iterator[Target]:
    out.mkdir(parents=True)
    with (out.parent / "receiver.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=NODELAY)

        def alive() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: see {out.parent / 'receiver.log'}")
            return True

        try:
            wait_for(lambda: alive() and port_open(port), 30, f"{what} to listen")
            yield Target(port, "ANY", proc.pid, lambda: sum(1 for p in out.iterdir() if p.is_file()))
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def pynetdicom_receiver(folder: Path) -> AbstractContextManager[Target]:
    port = free_port()
    cmd = [sys.executable, "-m", "pynetdicom", "storescp", str(port), "-aet", "ANY",
           "--output-directory", str(folder / "out"), "--max-pdu", str(PDU)]
    return process_receiver(cmd, port, folder / "out", "pynetdicom storescp")


def dcmtk_receiver(folder: Path) -> AbstractContextManager[Target]:
    port = free_port()
    cmd = ["storescp", "-aet", "ANY", "-od", str(folder / "out"), "-pdu", str(min(PDU, 131072)), str(port)]
    return process_receiver(cmd, port, folder / "out", "dcmtk storescp")


@contextmanager
def orthanc_receiver(folder: Path) -> Iterator[Target]:
    orthanc = Orthanc(folder)
    try:
        orthanc.start()
        assert orthanc._process is not None
        yield Target(orthanc.dicom_port, orthanc.aet, orthanc._process.pid, orthanc.count_instances)
    finally:
        orthanc.stop()


def send(target: Target, files: list[Path], parallel: int) -> tuple[float, list[str]]:
    """storescu on `parallel` associations at once; seconds from first start to last exit, errors."""
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", target.aet, "127.0.0.1",
                               str(target.port), *map(str, chunk)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=NODELAY)
             for chunk in chunks]
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0 or "E:" in err or "W: Store SCP Failed" in err:
                errors.append(f"storescu rc={proc.returncode}: {err.strip()[-500:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - start, errors


def settle_count(target: Target, expected: int) -> int:
    """The receiver's count once it reached `expected` or stopped growing for a few seconds."""
    deadline, last = time.monotonic() + 5, -1
    while True:
        got = target.received()
        if got >= expected:
            return got
        if got != last:
            deadline, last = time.monotonic() + 5, got
        if time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory_run(work: Path, count: int, rows: int) -> bool:
    source = work / "memory-src"
    study, series = generate_uid(), generate_uid()
    files: list[Path] = []
    for batch, first in enumerate(range(0, count, 250)):
        files += ct_series(source / f"b{batch:03d}", min(250, count - first), rows=rows, columns=rows,
                           study_uid=study, series_uid=series, seed=batch)
    with node_receiver(work / "memory-node") as target:
        samples = [rss_mib(target.pid)]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                try:
                    samples.append(rss_mib(target.pid))
                except (OSError, RuntimeError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            elapsed, errors = send(target, files, 1)
            got = settle_count(target, count)
        finally:
            done.set()
            sampler.join()
        samples.append(rss_mib(target.pid))
    ok = not errors and got == count
    start, peak, end = samples[0], max(samples), samples[-1]
    print(f"\nmemory: {count} instances of one series ({rows}x{rows}) to a fresh node on one association, "
          f"{count / elapsed:.1f} inst/s, {len(samples)} VmRSS samples every 0.2 s")
    print(f"  start {start:.1f} MiB   peak {peak:.1f} MiB   end {end:.1f} MiB   "
          f"peak - start {peak - start:.1f} MiB")
    if not ok:
        print(f"  FAILURE: node holds {got}/{count} instances; {' | '.join(errors)}", file=sys.stderr)
    shutil.rmtree(source, ignore_errors=True)
    return ok


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0].strip() if lines else "?"


def print_machine() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    print(f"machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, {platform.platform()}")
    print(f"versions: python {platform.python_version()}, pynetdicom {pynetdicom.__version__}, "
          f"{first_line(['storescu', '--version'])}, {first_line([ORTHANC_BINARY, '--version'])}")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="instances per measurement")
    parser.add_argument("--parallel", type=int, default=4, help="associations in the parallel column")
    parser.add_argument("--rows", type=int, default=512, help="rows and columns of each int16 slice")
    parser.add_argument("--skip-orthanc", action="store_true")
    parser.add_argument("--memory-count", type=int, default=2000, help="0 skips the memory run")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop receivers
    began = time.perf_counter()
    print_machine()
    receivers: list[tuple[str, Callable[[Path], AbstractContextManager[Target]]]] = [
        ("dicomnode", node_receiver), ("pynetdicom storescp", pynetdicom_receiver),
        ("dcmtk storescp", dcmtk_receiver)]
    if not args.skip_orthanc:
        if orthanc_available():
            receivers.append(("Orthanc", orthanc_receiver))
        else:
            print(f"Orthanc not found at {ORTHANC_BINARY}; skipped", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="dicomnode-ingest-", dir=args.workdir))
    failures: list[str] = []
    rates: dict[str, dict[int, float | None]] = {}
    try:
        files = ct_series(work / "src", args.count, rows=args.rows, columns=args.rows)
        size = sum(f.stat().st_size for f in files) / len(files) / 2**20
        print(f"{args.count} CT instances of {args.rows}x{args.rows} int16 ({size:.2f} MiB each) in {work}; "
              f"storescu with TCP_NODELAY=1; max PDU: node {PDU}, pynetdicom storescp {PDU}, "
              f"dcmtk storescp {min(PDU, 131072)}, Orthanc its default")
        for name, receiver in receivers:
            rates[name] = {}
            for parallel in dict.fromkeys((1, args.parallel)):
                folder = work / f"{name.split()[0]}-{parallel}"
                with receiver(folder) as target:
                    elapsed, errors = send(target, files, parallel)
                    got = settle_count(target, args.count)
                ok = not errors and got == args.count
                rates[name][parallel] = args.count / elapsed if ok else None
                print(f"  {name:<20} {parallel} assoc: {got}/{args.count} received in {elapsed:.2f} s"
                      + ("" if ok else "   <-- FAILURE"), flush=True)
                if not ok:
                    failures.append(f"{name}, {parallel} association(s): received {got}/{args.count}; "
                                    + " | ".join(errors))
                shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / "src", ignore_errors=True)

        def cell(value: float | None) -> str:
            return f"{value:.1f}" if value else "FAILED"

        p = args.parallel
        print(f"\n{'receiver':<28}{'1 assoc inst/s':>16}{f'{p} assoc inst/s':>16}")
        for name, by_parallel in rates.items():
            print(f"{name:<28}{cell(by_parallel[1]):>16}{cell(by_parallel[p]):>16}")
        node = rates["dicomnode"]
        for name in list(rates)[1:]:
            print(f"{'node / ' + name:<28}{ratio(node[1], rates[name][1]):>16}"
                  f"{ratio(node[p], rates[name][p]):>16}")
        print(f"{'node scaling ' + str(p) + ' / 1 assoc':<28}{'':>16}{ratio(node[p], node[1]):>16}")
        print("aim: node ≥ 0.8 × pynetdicom storescp on one association; scaling with parallel associations")
        if args.memory_count > 0 and not memory_run(work, args.memory_count, args.rows):
            failures.append("memory run: the node did not receive every instance")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print(f"FAILURE: {failure}", file=sys.stderr)
    print(f"\ntotal time {time.perf_counter() - began:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
