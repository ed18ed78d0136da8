"""Commands that use a trained bundle: predict, export, evaluate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ml.config import BACKENDS, PRECISIONS, VIEW_AGGREGATIONS
from ml.evaluate.numbers import interval, number
from ml.metrics.scores import AGGREGATIONS


def add_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict slices (files, folders, zips) with a bundle's ensemble",
        description="Research use only, not for clinical use.",
    )
    predict.add_argument("files", type=Path, nargs="+", help="PNG/JPEG/DICOM files, folders, zips")
    _add_bundle_options(predict)
    predict.add_argument("--study", action="store_true", help="the files are one patient's slices")
    predict.add_argument("--aggregation", choices=AGGREGATIONS, help="study score from slices")
    predict.add_argument("--cam", type=Path, metavar="OUT_DIR", help="write Grad-CAM overlays here")
    predict.add_argument("--cam-method", default="gradcam", help="gradcam | gradcam++ | eigencam")
    predict.add_argument("--opacity", type=float, default=0.4, help="overlay opacity, 0-1")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.set_defaults(handler=cmd_predict)

    export = commands.add_parser(
        "export",
        help="export a bundle's fold models to ONNX and OpenVINO (f32, bf16, mixed, int8), each "
        "checked against torch",
        description="Reduced precisions are checked on the bundle's out-of-fold slices, found "
        "in --data by content; without --data only float32 is checked, on phantoms.",
    )
    export.add_argument("bundle", type=Path, help="bundle folder")
    export.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="the bundle's training data, folder or CSV manifest (repeat for several sources)",
    )
    export.add_argument(
        "--check-slices", type=int, default=8, help="slices for the ONNX Runtime check"
    )
    export.add_argument(
        "--precision",
        action="append",
        choices=PRECISIONS[1:],
        help="OpenVINO precisions to make and check (default: all of them)",
    )
    export.add_argument(
        "--oof-slices",
        type=int,
        help="check the OpenVINO variants on at most this many out-of-fold slices (default: all)",
    )
    export.add_argument("--no-openvino", action="store_true", help="ONNX export only")
    export.set_defaults(handler=cmd_export)

    evaluate = commands.add_parser(
        "evaluate",
        help="score labelled data (or the holdout) with a bundle and write a report",
        description="Uses the bundle's operating points and calibrator; tunes nothing.",
    )
    evaluate.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    evaluate.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="labelled folder or CSV manifest to score (repeat for several sources, each "
        "reported on its own; name them as in training to rescore a holdout)",
    )
    evaluate.add_argument(
        "--labels",
        action="append",
        default=[],
        type=Path,
        metavar="CSV",
        help="slice and/or study labels for the --data folder that holds the file",
    )
    evaluate.add_argument("--holdout", action="store_true", help="the bundle's held-out patients")
    evaluate.add_argument("--out", type=Path, help="report folder (default: reports/BUNDLE/DATA)")
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend")
    evaluate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="f32",
        help="float32 by default: the figures are the model's; a reduced precision must have "
        "passed its check (ml export)",
    )
    evaluate.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    evaluate.add_argument("--device", default="cpu", help="torch backend: cpu, cuda or auto")
    evaluate.set_defaults(handler=cmd_evaluate)


def _add_bundle_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="OpenVINO precision; auto: the fastest that passed its check on this bundle",
    )
    parser.add_argument("--operating-point", help="name of a stored operating point")
    parser.add_argument("--views", help="comma-separated TTA views (default: the bundle's)")
    parser.add_argument(
        "--view-aggregation", choices=VIEW_AGGREGATIONS, default="mean", help="over TTA views"
    )
    parser.add_argument("--device", default="cpu", help="torch backend: cpu, cuda or auto")


def _predictor(args: argparse.Namespace):
    from ml.infer.predictor import Predictor

    views = tuple(v.strip() for v in args.views.split(",")) if args.views else None
    return Predictor.from_bundle(
        args.bundle,
        backend=args.backend,
        precision=args.precision,
        views=views,
        view_aggregation=args.view_aggregation,
        operating_point=args.operating_point,
        device=args.device,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from ml.data.inputs import gather

    predictor = _predictor(args)
    sources = gather(args.files)
    data, names = [s.data for s in sources], [s.name for s in sources]
    if args.study:
        study = predictor.predict_study(data, names, aggregation=args.aggregation)
        slices = study.slices
        result: dict = study.to_dict()
    else:
        slices = predictor.predict(data, names)
        result = {"slices": [s.to_dict() for s in slices]}
    if args.cam:
        result["cam"] = _write_cams(predictor, data, names, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    bundle, point = predictor.bundle, predictor.point
    print(
        f"bundle {bundle.name} ({bundle.id}), backend {predictor.backend} "
        f"{predictor.precision}, operating point {point.name} (threshold {point.threshold:.3f})"
    )
    if predictor.backend_note:
        print(f"note: {predictor.backend_note}")
    if bundle.synthetic_only:
        print("warning: this bundle was trained on synthetic phantoms only; it knows nothing")
        print("about real CT scans and its labels mean nothing for a patient.")
    for s in slices:
        flag = f"  uncertain: {', '.join(s.uncertain_reasons)}" if s.uncertain else ""
        print(f"{s.name}: {s.label} p={s.probability:.3f} (fold sd {s.fold_std:.3f}){flag}")
        if s.input_warning:
            print(f"  warning: {s.input_warning}")
    if args.study:
        print(
            f"study: {study.label} score={study.score:.3f} ({study.aggregation} of {len(slices)} "
            f"slices, threshold {study.threshold:.3f}, ordered by {study.order_by})"
        )
    print("Research use only, not for clinical use.")
    return 0


def _write_cams(predictor, data: list[bytes], names: list[str], args: argparse.Namespace) -> list:
    args.cam.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (content, name) in enumerate(zip(data, names, strict=True), start=1):
        explanation = predictor.explain(content, method=args.cam_method, opacity=args.opacity)
        target = args.cam / f"{index:04d}_{Path(name).stem}.png"
        target.write_bytes(explanation.overlay_png)
        written.append({"name": name, "overlay": str(target), **explanation.faithfulness})
    return written


def cmd_export(args: argparse.Namespace) -> int:
    from ml.infer import openvino as ov_backend
    from ml.infer.onnx import export_bundle

    data = [Path(text.split("=", 1)[1]) if "=" in text else Path(text) for text in args.data]
    manifest = export_bundle(
        args.bundle, data=data[0] if data else None, check_slices=args.check_slices
    )
    print(
        f"exported {len(manifest['files'])} fold models to {args.bundle / 'onnx'}; largest "
        f"probability difference against torch {manifest['max_abs_probability_difference']:.2e}"
        f" (logit {manifest['max_abs_logit_difference']:.2e}) on "
        f"{manifest['checked_on']}"
    )
    if args.no_openvino:
        return 0
    if not ov_backend.installed():
        print("note: OpenVINO is not installed; no OpenVINO variants made")
        return 0
    from ml.infer.openvino_export import export_openvino

    found = export_openvino(
        args.bundle,
        data,
        precisions=args.precision or ov_backend.PRECISIONS,
        max_slices=args.oof_slices,
    )
    print(
        f"OpenVINO {found['openvino'].split('-')[0]} on {found['machine']['cpu']}, checked on "
        f"{found['checked_on']}:"
    )
    for precision, check in found["checks"].items():
        print(f"  {precision}: {ov_backend.check_summary(check)}")
    speeds = ", ".join(f"{name} {ms:.1f}" for name, ms in found["ms_per_slice"].items())
    print(f"ms per slice (whole ensemble, here): {speeds}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ml.data.sources import parse_sources
    from ml.evaluate.scoring import evaluate_bundle

    sources = parse_sources(args.data, args.labels) if args.data else None
    name = "+".join(s.name for s in sources) if sources else "holdout"
    out = args.out or Path("reports") / args.bundle.name / (
        name + ("-holdout" if sources and args.holdout else "")
    )
    result = evaluate_bundle(
        args.bundle,
        data=sources,
        holdout=args.holdout,
        out=out,
        backend=args.backend,
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
    )
    for level in ("slice", "patient"):
        fig = result[level]
        active = result["active"][level]
        at = fig["operating_points"][active]
        print(
            f"{level}: n={fig['n']} ROC-AUC {number(fig['roc_auc'])} "
            f"(95% CI {interval(fig['roc_auc_ci95'])}), PR-AUC {number(fig['pr_auc'])}; "
            f"at {active}: "
            f"sensitivity {number(at['sensitivity'])} {interval(at['ci95']['sensitivity'])}, "
            f"specificity {number(at['specificity'])} {interval(at['ci95']['specificity'])}"
        )
    if len(result["by_source"]) > 1:
        for source, figures in result["by_source"].items():
            print(f"  {source}: {source_line(figures)}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"report written to {out}")
    return 0


def source_line(figures: dict) -> str:
    """One source's ROC-AUCs in a line: slice, patient (or why not), and against the folders."""
    text = f"slice ROC-AUC {_auc(figures['slice'])}"
    text += (
        f", patient {_auc(figures['patient'])}"
        if figures.get("patient")
        else f" ({figures.get('patient_note', 'no patient level')})"
    )
    folders = figures.get("against_folders")
    if folders:
        patient = f", patient {_auc(folders['patient'])}" if folders.get("patient") else ""
        text += f"; against the folder labels: slice {_auc(folders['slice'])}{patient}"
    return text


def _auc(level: dict) -> str:
    return f"{number(level['roc_auc'])} ({interval(level['roc_auc_ci95'])})"
