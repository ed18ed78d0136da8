"""Command line: `python -m ml {train,audit,info,synth} --help`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ml import config as configuration
from ml import runtime
from ml.cli import infer as cli_infer
from ml.errors import UserError

TRAIN_FLAGS = {
    # flag: (config field, type, help)
    "--folds": ("folds", int, "cross-validation folds"),
    "--holdout-frac": ("holdout_frac", float, "fraction of patients held out (stratified)"),
    "--epochs": ("epochs", int, "epochs per fold"),
    "--image-size": ("image_size", int, "network input side in pixels"),
    "--batch-size": ("batch_size", int, "images per step"),
    "--backbone": ("backbone", str, "timm model name"),
    "--pretrained": ("pretrained", str, "auto | file | hub | packaged | none"),
    "--pretrained-file": ("pretrained_file", str, "local backbone weight file"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--patient-regex": ("patient_regex", str, "regex with (?P<patient>...) on file names"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml",
        description="Brain-CT slice classifier (Normal vs Stroke). Research use only, "
        "not for clinical use.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_audit(commands)
    info = commands.add_parser("info", help="show a bundle's card after checking its hashes")
    info.add_argument("bundle", type=Path, help="bundle folder, e.g. bundles/demo")
    info.add_argument("--json", action="store_true", help="print the card as JSON")
    synth = commands.add_parser("synth", help="write synthetic head-CT phantoms")
    synth.add_argument("--out", type=Path, required=True, help="folder to write")
    synth.add_argument("--patients", type=int, default=24, help="patients, half with a stroke")
    synth.add_argument("--slices", type=int, default=8, help="slices per patient")
    synth.add_argument("--size", type=int, default=256, help="slice side in pixels")
    synth.add_argument("--format", choices=("png", "dicom", "both"), default="png")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.set_defaults(handler=cmd_synth)
    info.set_defaults(handler=cmd_info)
    cli_infer.add_commands(commands)
    return parser


def _add_data_command(
    commands: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """A subcommand that reads a dataset under a configuration (train, audit)."""
    parser = commands.add_parser(
        name,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields (--set FIELD=VALUE):\n" + configuration.describe_fields(),
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="dataset folder (one subfolder per class) or CSV manifest (path plus label, bleed "
        "and/or patient_bleed[, patient_id, slice, mask]); repeat for several sources, each "
        "reported on its own",
    )
    parser.add_argument(
        "--labels",
        action="append",
        default=[],
        type=Path,
        metavar="CSV",
        help="slice and/or study labels (path plus bleed and/or patient_bleed) for the --data "
        "folder that holds the file; they add slice labels and may correct the folders",
    )
    parser.add_argument(
        "--sources",
        type=Path,
        metavar="YAML",
        help="instead of --data: a list of sources, each {name, data, labels}",
    )
    parser.add_argument(
        "--preset", default="reference", help=f"one of {', '.join(configuration.preset_names())}"
    )
    parser.add_argument(
        "--class-map",
        help="folder names to labels, e.g. Normal=0,Bleeding=1,Ischemia=1 "
        "(default: Normal=0; Stroke, Bleeding, Ischemia, Haemorrhage, Hemorrhage=1)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field (repeatable); fields are listed below",
    )
    parser.add_argument("--strict", action="store_true", help="stop on any unreadable file")
    parser.add_argument(
        "--split", type=Path, help="CSV path,fold (fold 1..K or holdout) to reuse a split"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=configuration.DEFAULT_CACHE_DIR,
        help="decoded-slice cache",
    )
    parser.add_argument("--no-cache", action="store_true", help="decode without the cache")
    for flag, (_, kind, flag_help) in TRAIN_FLAGS.items():
        parser.add_argument(flag, type=kind, help=flag_help)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = _add_data_command(
        commands, "train", "train a patient-grouped K-fold ensemble into a bundle"
    )
    train.add_argument("--out", type=Path, required=True, help="bundle folder, e.g. bundles/cpu")
    train.add_argument("--resume", action="store_true", help="keep folds already trained")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument(
        "--note",
        action="append",
        default=[],
        help="a sentence for the model card, e.g. what the model must not be used for (repeatable)",
    )
    train.add_argument(
        "--distributed",
        choices=configuration.DISTRIBUTED_MODES,
        help="under torchrun (default data): data = every process trains each fold on its share "
        "of every batch (DistributedDataParallel); folds = fold k is trained by rank "
        "(k-1) %% world size",
    )
    train.add_argument(
        "--dist-timeout",
        type=float,
        default=configuration.DISTRIBUTED_TIMEOUT_MIN,
        metavar="MINUTES",
        help="under torchrun: the longest one process waits for another (default: %(default)s)",
    )
    train.set_defaults(handler=cmd_train)


def _add_audit(commands: argparse._SubParsersAction) -> None:
    audit = _add_data_command(
        commands, "audit", "data summary and leakage audit of the split, no training"
    )
    audit.set_defaults(handler=cmd_audit)


def config_from_args(args: argparse.Namespace) -> configuration.TrainConfig:
    overrides = dict(configuration.parse_override(text) for text in args.set)
    for flag, (field_name, _, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[field_name] = value
    if args.class_map:
        overrides["class_map"] = parse_class_map(args.class_map)
    if args.pretrained_file and not args.pretrained:
        overrides.setdefault("pretrained", "file")
    return configuration.make_config(args.preset, **overrides)


def sources_from_args(args: argparse.Namespace) -> list:
    """The data sources of `--data`/`--labels`, or of `--sources`; each run says its labels."""
    from ml.data.sources import parse_sources

    if not args.data and not args.sources:
        raise ValueError("give --data (a folder or manifest; repeat for several) or --sources")
    return parse_sources(args.data, args.labels, args.sources)


def parse_class_map(text: str) -> dict[str, int]:
    """`Normal=0,Bleeding=1` -> {"Normal": 0, "Bleeding": 1}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if value.strip() not in ("0", "1"):
            raise ValueError(f"class map entry {item!r} must be NAME=0 or NAME=1")
        mapping[name.strip()] = int(value)
    return mapping


def cmd_train(args: argparse.Namespace) -> int:
    from ml.train.distributed import StoppedByRankZero, is_main_process
    from ml.train.pipeline import run_training

    cfg = config_from_args(args)
    try:
        run_training(
            sources_from_args(args),
            args.out,
            cfg,
            resume=args.resume,
            strict=args.strict,
            split_file=args.split,
            cache_dir=None if args.no_cache else args.cache_dir,
            progress=not args.quiet,
            notes=args.note,
            distributed=args.distributed,
            timeout_min=args.dist_timeout,
        )
    except StoppedByRankZero:
        return 2  # rank 0 prints the reason; one message is enough
    if is_main_process():  # under torchrun, rank 0 alone wrote the bundle
        print((args.out / "report.md").read_text())
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ml.train.pipeline import prepare

    cfg = config_from_args(args)
    prepared = prepare(
        sources_from_args(args),
        cfg,
        strict=args.strict,
        split_file=args.split,
        cache_dir=None if args.no_cache else args.cache_dir,
    )
    summary = {
        "data": prepared.dataset.summary(),
        "labels": prepared.labels_used,
        "notes": prepared.dataset.notes,
    }
    print(json.dumps(summary, indent=2))
    for index, why in prepared.decoded.bad:
        print(f"unreadable: {prepared.dataset.records[index].rel_path}: {why}")
    print(json.dumps(prepared.audit, indent=2))
    return 0 if prepared.audit["ok"] else 1


def cmd_info(args: argparse.Namespace) -> int:
    from ml.bundle import load_bundle

    card = load_bundle(args.bundle).card()
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    metrics = card["metrics"]
    print(f"bundle {card['name']} (id {card['id']}), created {card['created']}")
    print(f"backbone {card['backbone']} ({card['weights_source']}), {card['image_size']} px")
    print(f"data: {json.dumps(card['data'])}")
    for line in _figure_lines(metrics):
        print(line)
    print(f"leakage audit passed: {card['audit_ok']}")
    inference = card["inference"]
    if inference is None:
        print("OpenVINO: no export checked for these weights (python -m ml export --data DIR)")
    else:
        from ml.infer.openvino import check_summary

        print(f"OpenVINO checks on {inference['checked_on']}:")
        for precision, check in inference["checks"].items():
            print(f"  {precision}: {check_summary(check)}")
    print(f"memory allocator of this process: {runtime.allocator()}")
    for note in card["notes"]:
        print(f"note: {note}")
    return 0


def _figure_lines(metrics: dict) -> list[str]:
    """OOF ROC-AUC pooled, then per source (a pooled figure of two sites hides both), then which
    labels each source brought, the Grad-CAM check and the patient-score rule, as on the card."""
    from ml.evaluate.model_card import label_lines
    from ml.evaluate.numbers import interval, number

    def auc(figures: dict) -> str:
        return f"{number(figures['roc_auc'])} (95% CI {interval(figures['roc_auc_ci95'])})"

    by_source = metrics.get("by_source") or {}
    lines = [f"OOF {level} ROC-AUC {auc(metrics[level])}" for level in ("slice", "patient")]
    if len(by_source) > 1:  # patients only of the sources with both labels among them
        counted = metrics["patient"].get("sources") or list(by_source)
        lines[0] += " (every source pooled)"
        lines[1] += f" ({', '.join(counted)})"
        for source, figures in by_source.items():
            lines.append(f"  {source}: slice {auc(figures['slice'])} ({figures['slice_labels']})")
            patient = figures.get("patient")
            lines.append(
                f"  {source}: patient {auc(patient)}"
                if patient
                else f"  {source}: {figures.get('patient_note')}"
            )
    return lines + label_lines(metrics)


def cmd_synth(args: argparse.Namespace) -> int:
    from ml.data.synth import write_dataset

    summary = write_dataset(
        args.out,
        patients=args.patients,
        slices_per_patient=args.slices,
        size=args.size,
        fmt=args.format,
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
