"""The `dicomnode` command: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from dicomnode import __version__
from dicomnode.config import Config, load_config
from dicomnode.errors import DicomNodeError

log = logging.getLogger("dicomnode")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except DicomNodeError as exc:
        print(f"dicomnode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the node in the foreground")
    serve.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    serve.set_defaults(func=_serve)

    send = sub.add_parser("send", help="send DICOM files or folders by C-STORE")
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument("--aet", default="ANY-SCP", help="called AE title (default ANY-SCP)")
    send.add_argument("--calling-aet", default="DICOMNODE", help="calling AE title")
    send.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    send.set_defaults(func=_send)

    rules = sub.add_parser("rules", help="validate and try rule files")
    rules_sub = rules.add_subparsers(required=True, metavar="ACTION")
    check = rules_sub.add_parser("check", help="validate RULES; show which rules match each series")
    check.add_argument("rules", type=Path, metavar="RULES")
    check.add_argument("dicom", nargs="*", type=Path, metavar="DICOM")
    check.add_argument("--config", type=Path, help="configuration naming the destinations")
    check.add_argument("--calling-aet", default="", help="CallingAETitle to match against")
    check.set_defaults(func=_rules_check)

    engines = sub.add_parser("engines", help="list, build and benchmark model engines")
    engines_sub = engines.add_subparsers(required=True, metavar="ACTION")
    e_list = engines_sub.add_parser("list", help="models, versions, checksums, backends")
    e_build = engines_sub.add_parser("build", help="compile TensorRT plans ahead of time")
    e_build.add_argument("model", nargs="?")
    e_build.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    e_bench = engines_sub.add_parser("bench", help="slices/s per backend and batch size")
    e_bench.add_argument("model", nargs="?")
    e_bench.add_argument("--batch-sizes", default="1,4,8",
                         help="comma-separated batch sizes (default 1,4,8)")
    e_bench.add_argument("--iterations", type=int, default=10)
    for p, action in ((e_list, "list"), (e_build, "build"), (e_bench, "bench")):
        p.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
        p.set_defaults(func=_engines, action=action)

    calibrate = sub.add_parser(
        "calibrate", help="fit a generator's score scale to a site's own normal studies")
    calibrate.add_argument("generator", choices=["anomaly_triage"])
    calibrate.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                           help="files or folders of series read as normal (one series per study)")
    calibrate.add_argument("--model", help="model name in the zoo (default: the configured one)")
    calibrate.add_argument("--min-series", type=int, default=20, metavar="N",
                           help="fewest scored series to fit from (default 20)")
    calibrate.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    calibrate.set_defaults(func=_calibrate)

    worklist = sub.add_parser("worklist", help="print the triage worklist, most urgent first")
    worklist.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    worklist.set_defaults(func=_worklist)

    phantom = sub.add_parser("phantom", help="write a synthetic head CT series (extra [train])")
    phantom.add_argument("outdir", type=Path, metavar="OUTDIR")
    phantom.add_argument("--lesion", help="ich, sdh, edh, sah, infarct or mass (default: healthy)")
    phantom.add_argument("--size", choices=["small", "medium", "large"], help="lesion size class")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--slice-thickness", type=float, help="mm (default: drawn from the seed)")
    phantom.add_argument("--matrix", type=int, default=512, help="rows and columns (default 512)")
    phantom.add_argument("--vendor", help="scanner profile: ge, philips, siemens, or canon (kept out of "
                         "training) (default: one of the first three, drawn from the seed)")
    phantom.add_argument("--position", default="HFS", choices=["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR"],
                         help="patient position the slices are stored for: head or feet first, supine, "
                         "prone or decubitus left/right (default HFS)")
    phantom.add_argument("--field-of-view", type=float, metavar="MM",
                         help="reconstruction field of view (default: drawn from the seed, 220-270 mm)")
    phantom.add_argument("--gantry-tilt", type=float, default=0.0, metavar="DEG",
                         help="scan with the gantry tilted by DEG degrees, -30 to 30 (default 0)")
    phantom.add_argument("--head-pitch", type=float, default=0.0, metavar="DEG",
                         help="pitch the head DEG degrees more than the seed draws (±12), -30 to 30; "
                         "equal to --gantry-tilt, the slices cut the head as an untilted scan does")
    phantom.add_argument("--head-roll", type=float, default=0.0, metavar="DEG",
                         help="roll the head DEG degrees about its front-back axis (left ear up) more "
                         "than the seed draws (±5), -30 to 30")
    phantom.add_argument("--head-yaw", type=float, default=0.0, metavar="DEG",
                         help="turn the head DEG degrees about its head-foot axis (nose to the left) "
                         "more than the seed draws (±8), -30 to 30")
    phantom.add_argument("--enhanced", action="store_true",
                         help="write the series as one multi-frame instance (Legacy Converted Enhanced CT)")
    phantom.add_argument("--full-noise", action="store_true",
                         help="give thin slices their full noise (8-20 HU at 0.625 mm), not the 10 HU "
                              "training caps it at")
    phantom.add_argument("--contrast", type=float, metavar="HU",
                         help="enhance the head as after an iodine bolus, vessel blood at HU (150-200 a "
                              "venous phase, 250-450 an angiogram); the headers do not name the agent, as "
                              "some scanners leave it out: the node must recognise it from the pixels")
    phantom.add_argument("--metal", action="store_true",
                         help="put a platinum coil into an aneurysm, with the streaks it casts across "
                              "its slices")
    phantom.add_argument("--subdural-age", choices=["acute", "subacute", "chronic"], default="acute",
                         help="with --lesion sdh: fresh blood, 50-80 HU (default); days "
                              "old, isodense to the cortex, 30-45 HU; or weeks old, hypodense, 8-25 HU")
    phantom.add_argument("--mass-effect", action="store_true",
                         help="with --lesion sdh or edh: the collection pushes the brain towards the other "
                              "side, shifting the midline, instead of taking the place of its surface")
    phantom.add_argument("--lossy-ratio", type=float, metavar="RATIO",
                         help="store the pixels JPEG 2000 compressed with loss at about RATIO:1, recorded "
                              "in the headers, as an archive that compresses to save space sends them")
    phantom.set_defaults(func=_phantom)

    train = sub.add_parser("train", help="train a reference model and export it to the zoo (extra [train])")
    train.add_argument("model", choices=["anomaly_triage"])
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--batch-size", type=int, default=12)
    train.add_argument("--out", type=Path, help="model folder (default: engines/MODEL)")
    train.add_argument("--init", type=Path, help="continue from these weights (a model.pt)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    train.add_argument("--subtle-hu", type=float,
                       help="lesions fainter than this (mean |HU|) weigh up to 4x more (default 0: off)")
    train.add_argument("--huber-hu", type=float,
                       help="errors under this many HU cost quadratically, so healthy pixels stop "
                            "outweighing faint lesions (default 0: plain L1)")
    train.add_argument("--kind-weights", metavar="KIND=W,...",
                       help="relative sampling weight of lesion kinds, e.g. infarct=3,mass=2 "
                            "(default: uniform)")
    train.add_argument("--mirrored", action="store_true",
                       help="the network also sees each slice mirrored left to right")
    train.add_argument("--vary-texture", action="store_true",
                       help="give each phantom its own noise level, noise grain and kernel blur, over a "
                            "wider range than the scanner profiles (robustness to other scanners)")
    train.add_argument("--healthy-slices", type=int, default=1, metavar="N",
                       help="healthy slices drawn from each third of a phantom's coverage (skull base, "
                            "mid-brain, vertex) besides the lesion's slices (default 1)")
    train.add_argument("--scanner-matrix-share", type=float, default=0.0, metavar="SHARE",
                       help="share of phantoms rendered at 512x512 and resampled to the model grid as "
                            "the node resamples a scanner's series (default 0: all at the model grid)")
    train.add_argument("--extra-pitch", type=float, default=0.0, metavar="DEG",
                       help="pitch each phantom's head a further uniform ±DEG degrees besides its drawn "
                            "pose's ±12 (default 0)")
    train.add_argument("--older-subdurals", type=float, default=0.0, metavar="SHARE",
                       help="share of subdural haematomas drawn days old (isodense) or weeks old "
                            "(hypodense), half each, instead of fresh (default 0)")
    train.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default cpu)")
    train.add_argument("--render-workers", type=int, default=0, metavar="N",
                       help="processes rendering phantoms ahead of the training steps (default 0: "
                            "in-process); any N >= 1 gives the same data")
    train.add_argument("--pool-size", type=int, help="studies kept for drawing batches (default 160)")
    train.add_argument("--initial-studies", type=int,
                       help="studies rendered before the first step (default 16)")
    train.add_argument("--refresh-every", type=int, metavar="STEPS",
                       help="add a new study every STEPS steps (default 12)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a generator on held-out phantoms")
    evaluate.add_argument("generator", choices=["anomaly_triage"])
    evaluate.add_argument("--model", default="anomaly_triage", help="model name in the zoo")
    evaluate.add_argument("--studies", type=int, default=200, help="held-out studies (half healthy)")
    evaluate.add_argument("--shifted", type=int, default=60,
                          help="studies per shifted condition, the reference set's first ones "
                               "re-scanned (0: reference set only)")
    evaluate.add_argument("--matrix", type=int, default=256, help="phantom rows and columns")
    evaluate.add_argument("--calibrate", type=int, default=0, metavar="N",
                          help="first fit calibration_ml on N healthy calibration studies")
    evaluate.add_argument("--calibration-matrix", type=int, default=512, metavar="N",
                          help="rows and columns of the calibration phantoms (default 512, what scanners "
                               "send: healthy heads score differently at 256)")
    evaluate.add_argument("--only", metavar="TEXT",
                          help="only the shifted conditions whose name holds TEXT, e.g. 'pitched' "
                               "(default: every one)")
    evaluate.add_argument("--write-card", action="store_true", help="write the tables into the model card")
    evaluate.add_argument("--validation", action="store_true",
                          help="validation phantoms (to choose settings or models), not held-out ones")
    evaluate.add_argument("--render-workers", type=int, default=1, metavar="N",
                          help="processes rendering phantoms ahead of the model (0: in this process)")
    evaluate.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    evaluate.set_defaults(func=_evaluate)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom narrates every PDU at INFO; its warnings and errors still show.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    from dicomnode.service import Node

    config = load_config(args.config)
    Node(config).serve_forever()
    return 0


def _send(args: argparse.Namespace) -> int:
    from dicomnode.sending import send_paths

    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print(f"dicomnode: error: --to {args.to!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    return send_paths(args.paths, host, int(port), args.aet, args.calling_aet, args.timeout)


def _rules_check(args: argparse.Namespace) -> int:
    from dicomnode.rules import load_rules, match, series_attributes
    from dicomnode.sending import iter_dicom_headers

    config: Config = load_config(args.config)
    rules = load_rules(args.rules, config.destinations)
    print(f"{args.rules}: {len(rules)} rule(s), valid")
    series: dict[str, list[Path]] = defaultdict(list)
    first: dict[str, object] = {}
    for path, ds in iter_dicom_headers(args.dicom):
        uid = str(ds.get("SeriesInstanceUID", "(no Series Instance UID)"))
        series[uid].append(path)
        first.setdefault(uid, ds)
    for uid, paths in series.items():
        attrs = series_attributes(first[uid], args.calling_aet)  # type: ignore[arg-type]
        routes = match(attrs, rules)
        description = attrs.get("SeriesDescription") or ""
        print(f"series {uid} ({len(paths)} file(s)) {attrs.get('Modality', '')} {description}")
        if not routes:
            print("  no rule matches")
        for route in routes:
            action = (f"forward to {', '.join(route.forward_to)}" if route.forward_to
                      else f"run {route.run}, send to {', '.join(route.send_to)}")
            print(f"  matches {route.rule}: {action}")
    return 0


def _engines(args: argparse.Namespace) -> int:
    from dicomnode.engines import commands

    config = load_config(args.config)
    if args.action == "list":
        return int(commands.cmd_list(config))
    if args.action == "build":
        return int(commands.cmd_build(config, args.model, args.precision))
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    return int(commands.cmd_bench(config, args.model, sizes, args.iterations))


def _phantom(args: argparse.Namespace) -> int:
    from dicomnode.phantoms.commands import cmd_phantom

    return cmd_phantom(args.outdir, args.lesion, args.seed, args.slice_thickness, args.matrix,
                       vendor=args.vendor, size=args.size, position=args.position,
                       field_of_view=args.field_of_view, gantry_tilt=args.gantry_tilt,
                       head_pitch=args.head_pitch, head_roll=args.head_roll, head_yaw=args.head_yaw,
                       enhanced=args.enhanced, full_noise=args.full_noise,
                       contrast=args.contrast, metal=args.metal,
                       subdural_age=args.subdural_age, mass_effect=args.mass_effect,
                       lossy_ratio=args.lossy_ratio)


def _train(args: argparse.Namespace) -> int:
    from dicomnode.training.commands import cmd_train

    out = args.out or Path("engines") / args.model
    return cmd_train(args.model, out, args.steps, args.seed, batch_size=args.batch_size, init=args.init,
                     lr=args.lr, subtle_hu=args.subtle_hu, mirrored=args.mirrored,
                     huber_hu=args.huber_hu, kind_weights=args.kind_weights, vary_texture=args.vary_texture,
                     device=args.device, render_workers=args.render_workers, pool_size=args.pool_size,
                     initial_studies=args.initial_studies, refresh_every=args.refresh_every,
                     healthy_slices=args.healthy_slices, scanner_matrix_share=args.scanner_matrix_share,
                     extra_pitch=args.extra_pitch, older_subdurals=args.older_subdurals)


def _evaluate(args: argparse.Namespace) -> int:
    from dicomnode.evaluation import cmd_evaluate

    return cmd_evaluate(load_config(args.config), args.model, args.studies, args.shifted, args.matrix,
                        args.calibrate, args.write_card, validation=args.validation,
                        render_workers=args.render_workers, calibration_matrix=args.calibration_matrix,
                        only=args.only)


def _calibrate(args: argparse.Namespace) -> int:
    from dicomnode.calibration import cmd_calibrate

    return cmd_calibrate(load_config(args.config), args.paths, args.model, args.min_series)


def _worklist(args: argparse.Namespace) -> int:
    from dicomnode.worklist.commands import cmd_worklist

    return cmd_worklist(load_config(args.config))


if __name__ == "__main__":
    sys.exit(main())
