"""benchmarks/bench_inference.py: its report, from measurements made up here."""

from __future__ import annotations

from pathlib import Path

from tests.unit.benchmark_script import load_script

FLOPS = {"per_image": 1e9, "folds": 5, "views": 3, "backbone": "b", "image_size": 300}


def _timing(ms: float, study: list[float] | None = None) -> dict:
    found = {"ms_per_slice": ms, "allocator": "default"}
    if study:
        found.update(study_first_s=study[0], study_s=min(study))
    return found


def _check(passed: bool, flips: int = 0) -> dict:
    check = {"max_prob_diff": 0.01, "roc_auc_diff": 0.0, "flips": flips, "slices": 48}
    return {**check, "passed": passed, "failures": [] if passed else ["too many flips"]}


def test_the_report_names_the_fastest_variant_that_passed_and_its_studies(capsys) -> None:
    results = {
        "plain": _timing(600),
        "torch": _timing(300, [9.0, 8.5, 8.8]),
        "onnx": _timing(200, [6.0, 5.9, 6.1]),
        "openvino-bf16": _timing(100, [3.4, 3.1, 3.2]),
        "openvino-mixed": _timing(150, [4.4, 4.5, 4.6]),
    }
    checks = {"bf16": _check(True), "mixed": _check(True), "int8": _check(False, flips=3)}

    load_script("bench_inference").report(results, checks, FLOPS, 100.0, Path("bench"))

    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (
        "speedup_best=6.00 backend=openvino precision=bf16 max_prob_diff=0.01 flips=0"
    )
    bf16 = next(line for line in lines if line.startswith("(e) "))
    assert "3.1 s (3.4 s)" in bf16  # the best study, the first in brackets
    refused = next(line for line in lines if line.startswith("(f) "))
    assert "not timed" in refused and "3 of 48 labels flipped" in refused
    header = next(line for line in lines if line.startswith("approach"))
    mixed = next(line for line in lines if line.startswith("(e2) "))  # the longest name timed
    # each row's ms per slice ends under the header's, however long the row's name
    end = header.index("ms/slice") + len("ms/slice")
    assert bf16.index(" 100 ") + len(" 100") == end
    assert mixed.index(" 150 ") + len(" 150") == end


def test_ratios_are_against_the_faster_of_the_plain_loops_first_and_last_run(capsys) -> None:
    script = load_script("bench_inference")
    plain = script.plain_of_both(_timing(800), _timing(600))
    results = {"plain": plain, "torch": _timing(300), "onnx": _timing(200)}

    script.report(results, {}, FLOPS, 100.0, Path("bench"))

    lines = capsys.readouterr().out.splitlines()
    assert "plain loop timed first and last: 800 and 600 ms per slice" in lines
    assert lines[-1].startswith("speedup_best=3.00 backend=onnx ")  # 600 / 200, not 800 / 200
