"""Time from the last instance of a head CT being acknowledged to both results stored in Orthanc.

A 32-slice, 5 mm, 512×512 haemorrhage phantom is sent with dcmtk's storescu to the node,
which runs `anomaly_triage` and sends a heat-map Secondary Capture series and a TID 1500
report to a real Orthanc. The configured stability wait (the release grace after the
association closes) is subtracted: it is a setting, not work.

    .venv/bin/python benchmarks/triage_latency.py [--runs 3] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.phantoms import make_study, write_series  # noqa: E402
from tests.support.dcmtk import storescu  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402
from tests.support.ports import wait_for  # noqa: E402

GRACE = 0.5


def results_stored(orthanc: Orthanc, study_uid: str) -> bool:
    found = {}
    for modality in ("SR", "OT"):
        query = {"Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": modality}}
        found[modality] = orthanc.post("/tools/find", query)
    return bool(found["SR"]) and bool(found["OT"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime", choices=["auto", "onnxruntime", "tensorrt"])
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--single-pass", action="store_true",
                        help="mirror_average off: the model runs once per slice instead of twice")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    passes = "one pass per slice" if args.single_pass else "slice and mirror image (mirror_average)"
    print(f"machine: {os.cpu_count()} CPUs, {cpu}; backend {args.backend}; {passes}")
    with tempfile.TemporaryDirectory(prefix="dicomnode-latency-") as tmp:
        work = Path(tmp)
        series = []
        for run in range(args.runs):
            study = make_study(500 + run, "ich", slice_thickness_mm=5.0, coverage_mm=160.0,
                               matrix=args.matrix, lesion_size="medium")
            series.append(write_series(study, work / f"series{run}"))
        print(f"{args.runs} phantom series of {len(series[0])} slices, {args.matrix}×{args.matrix}, 5 mm")
        rules = [{"name": "triage", "when": {"Modality": "CT"}, "run": "anomaly_triage", "send_to": ["pacs"]}]
        latencies, compute = [], []
        with Orthanc(work / "orthanc") as orthanc:
            pacs = {"pacs": {"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": orthanc.aet}}
            node = NodeProcess(work / "node", rules=rules, destinations=pacs,
                               series={"stable_seconds": 60, "release_grace_seconds": GRACE},
                               engines={"models_dir": str(REPO / "engines"), "backend": args.backend},
                               anomaly_triage={"mirror_average": not args.single_pass})
            with node:
                import pydicom

                for run, files in enumerate(series):
                    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
                    result = storescu(node.port, files)
                    acknowledged = time.monotonic()
                    if result.returncode != 0:
                        print(result.stderr, file=sys.stderr)
                        return 1
                    wait_for(lambda uid=study_uid: results_stored(orthanc, uid), 300,
                             "results in Orthanc", interval=0.02)
                    latency = time.monotonic() - acknowledged - GRACE
                    latencies.append(latency)
                    print(f"  run {run + 1}: {latency:.2f} s from last acknowledgement to results stored")
                jobs = re.findall(r"produced \d+ object\(s\) in ([0-9.]+) s", node.log())
                compute = [float(s) for s in jobs]
    median = statistics.median(latencies)
    print(f"latency (excluding the {GRACE:g} s release grace): median {median:.2f} s, "
          f"min {min(latencies):.2f} s, max {max(latencies):.2f} s")
    if compute:
        job = statistics.median(compute)
        print(f"of which the job itself (load, inference, outputs): median {job:.2f} s")
    print("aim: ≤ 5 s on 2 CPU cores with ONNX Runtime; ≤ 1 s on a GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
