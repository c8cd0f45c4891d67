"""Peak memory of one anomaly-triage job, against the size of the series it reads.

Head CT phantoms (512×512 by default) are written at each slice thickness asked for and
each is analysed by the `anomaly_triage` generator in a fresh process, as a worker would:
the series is read, then the process's resident memory is taken before the job and its
peak (VmHWM) after it. The job's growth is printed in MiB and as a multiple of the series'
float32 HU volume, the one copy any job needs.

With `--enhanced` each series is first converted to one Legacy Converted Enhanced CT
instance, which the job reads frame by frame.

    .venv/bin/python benchmarks/triage_memory.py [--thickness 5 0.625] [--matrix 512] [--enhanced]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.phantoms import make_study, write_enhanced_series, write_series  # noqa: E402


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def _job(folder: str) -> tuple[float, float, float, float]:
    """In a fresh process: (RSS before the job, peak RSS, seconds, score)."""
    import pydicom

    from dicomnode.config import load_config
    from dicomnode.engines import EngineRegistry
    from dicomnode.generators.anomaly_triage import AnomalyTriage

    config = load_config(None)
    engines = EngineRegistry(config.engines, config.node.data_dir)
    engines.get("anomaly_triage")  # loaded (and warmed up) before the job, as in a running node
    datasets = [pydicom.dcmread(path) for path in sorted(Path(folder).iterdir())]
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    output = AnomalyTriage(engines, config.anomaly_triage).run(datasets, {})
    seconds = time.perf_counter() - start
    assert output.triage is not None
    return before, _status_mib("VmHWM"), seconds, output.triage.score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thickness", type=float, nargs="+", default=[5.0, 1.0, 0.625],
                        help="slice thicknesses (mm) of the series to analyse")
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--coverage", type=float, default=160.0, help="head coverage (mm)")
    parser.add_argument("--enhanced", action="store_true",
                        help="read each series as one multi-frame instance")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"{'series':>22} {'job s':>6} {'RSS before':>11} {'peak':>8} {'job growth':>11} "
          f"{'HU volume':>10} {'growth / volume':>16}")
    with tempfile.TemporaryDirectory(prefix="dicomnode-memory-") as tmp:
        for thickness in args.thickness:
            study = make_study(700, "ich", slice_thickness_mm=thickness, coverage_mm=args.coverage,
                               matrix=args.matrix, lesion_size="medium")
            folder = Path(tmp) / f"series-{thickness:g}mm"
            if args.enhanced:
                write_enhanced_series(study, folder)
            else:
                write_series(study, folder)
            slices = study.shape[0]
            volume_mib = slices * args.matrix * args.matrix * 4 / 2**20
            with context.Pool(1) as pool:
                before, peak, seconds, _ = pool.apply(_job, (str(folder),))
            growth = peak - before
            name = f"{slices} × {thickness:g} mm" + (" enhanced" if args.enhanced else "")
            print(f"{name:>22} {seconds:6.1f} {before:8.0f} MiB {peak:4.0f} MiB {growth:7.0f} MiB "
                  f"{volume_mib:6.0f} MiB {growth / volume_mib:15.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
