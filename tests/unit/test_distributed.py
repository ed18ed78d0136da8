"""`ml train` under torchrun: batch pieces, the team of one, and two CPU processes (gloo)
checked against the single-process run in both modes.

The folds-mode run goes through torchrun itself. The data-mode runs start their two processes
from a fork server, placed as torchrun places them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT): the server imports torch and the app once for all of them (6-8 s of CPU time
saved per process) and passes on this process's environment, HF_HUB_OFFLINE=1 included.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import ml.train.distributed
import ml.train.finish
import ml.train.pipeline
from ml.bundle import load_bundle
from ml.cli.main import build_parser, config_from_args, main
from ml.config import TrainConfig, make_config
from ml.errors import UserError
from ml.train.distributed import ENVIRONMENT, Place, join, place_from_env
from ml.train.loop import make_loader, train_fold
from ml.train.pipeline import fold_data, prepare, run_training

REPO = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT_S = 300

# Data mode is compared at rounding level, so the test removes the two differences it has by
# design: augmentation and dropout are drawn per process, and on the CPU torch has no
# SyncBatchNorm (each process would normalise its own half batch once the backbone trains).
DATA_MODE = {"augment": "none", "dropout": 0.0, "freeze_epochs": 2}
# The sync adds two half-batch gradient sums where one process sums the batch at once: float32
# rounding apart, nothing may differ. Measured here: 0 (bit-identical). A run with the sync cut
# differed by 6e-3; the test asks for more than 20 times this tolerance.
DATA_MODE_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """torchrun and torch's process starter leave their own temporary files (rendezvous folders,
    error-file pickles) in the temporary folder: keep them under pytest's, not the machine's."""
    scratch = tmp_path_factory.mktemp("torch-tmp")
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


def _rank_pieces(options: dict, world_size: int) -> tuple[list, list]:
    loaders = [make_loader(**options, share=(rank, world_size)) for rank in range(world_size)]
    pieces = [[batch.tolist() for batch in loader] for loader in loaders]
    return pieces, [loader.batch_sampler for loader in loaders]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("order", ["weighted", "shuffled", "sequential"])
def test_pieces_rebuild_the_batches_and_mean_loss_of_one_process(
    order: str, world_size: int
) -> None:
    dataset = list(range(33))  # four batches of 8, then one of 1: a piece for one rank only
    options = {"dataset": dataset, "batch_size": 8, "num_workers": 0, "seed": 7}
    if order == "weighted":
        options["weights"] = torch.linspace(1.0, 3.0, len(dataset), dtype=torch.double)
    options["shuffle"] = order == "shuffled"
    single = [batch.tolist() for batch in make_loader(**options)]
    pieces, shares = _rank_pieces(options, world_size)
    loss = torch.tensor(dataset, dtype=torch.float64) ** 1.5  # any per-sample loss
    if order != "sequential":
        assert list(itertools.chain(*single)) != dataset  # a drawn order, not the identity
    for step, batch in enumerate(single):
        own = [pieces[rank][step][: shares[rank].real_size(step)] for rank in range(world_size)]
        assert list(itertools.chain(*own)) == batch
        assert all(pieces[rank][step] for rank in range(world_size))  # every rank steps
        # DistributedDataParallel averages the processes' gradients of their weighted losses.
        averaged = sum(
            loss[pieces[rank][step]].mean() * shares[rank].loss_weight(step)
            for rank in range(world_size)
        )
        assert float(averaged) / world_size == pytest.approx(float(loss[batch].mean()))
    assert sum(share.real_total for share in shares) == len(dataset)


def test_torchrun_is_recognised_by_its_environment() -> None:
    assert place_from_env({}) is None
    assert place_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Place(1, 2, 1)
    with pytest.raises(UserError, match="RANK=2"):
        place_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_one_process_is_a_team_of_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for key in ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    with join(None, "cpu") as team:
        assert (team.rank, team.world_size, team.is_main) == (0, 1, True)
        assert team.on_main(lambda: 5) == 5 and team.all_gather(3) == [3]
        assert team.sum([1.5, 2.0]) == [1.5, 2.0]
    args = ["train", "--data", str(tmp_path), "--preset", "test", "--out", str(tmp_path / "b")]
    assert main([*args, "--distributed", "folds"]) == 2
    assert "needs several processes started by torchrun" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _torchrun(*args: str) -> str:
    """`python -m torch.distributed.run --nproc-per-node 2 --standalone -m ml ARGS`."""
    env = {key: value for key, value in os.environ.items() if key not in ENVIRONMENT}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", "ml", *args]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def _launch(target: Callable[[list[str]], object], argv: list[str], logs: Path) -> list[str]:
    """`target(argv)` in two processes placed as torchrun places them; each rank's stdout."""
    multiprocessing.set_forkserver_preload([__name__])  # torch and ml, imported once
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logs.mkdir(parents=True, exist_ok=True)
    ranks = torch.multiprocessing.start_processes(
        _as_rank, (2, port, target, argv, logs), nprocs=2, join=False, start_method="forkserver"
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not ranks.join(timeout=5):  # raises as soon as one of them fails
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"the two processes did not finish within {LAUNCH_TIMEOUT_S} s")
    return [(logs / f"rank_{rank}.out").read_text() for rank in range(2)]


def _as_rank(rank: int, world_size: int, port: int, target, argv: list[str], logs: Path) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)  # OMP_NUM_THREADS=1: torch is imported already
    with (logs / f"rank_{rank}.out").open("w") as out, contextlib.redirect_stdout(out):
        code = target(argv)
    if code:
        raise RuntimeError(f"rank {rank}: exit code {code}")


def _train_unsynced(argv: list[str]) -> None:
    """`ml train` with DistributedDataParallel cut out: each process trains alone on its piece
    of every batch, while pieces, scoring and gathering stay the real code. Rank 0 writes only
    the out-of-fold probabilities (oof.json); a broken run's figures are not worth their time."""
    args = build_parser().parse_args(argv)
    ml.train.distributed.DistributedDataParallel = lambda module, **_options: module
    ml.train.finish.write_bundle = _write_oof_only
    cfg = config_from_args(args)
    run_training(args.data, args.out, cfg, cache_dir=args.cache_dir, progress=not args.quiet)


def _hang_on_rank_1(argv: list[str]) -> object:
    """`ml train` in which rank 1 stops answering: it sleeps where it should train."""
    if os.environ["RANK"] == "1":
        ml.train.pipeline.fold_data = lambda *_args: time.sleep(LAUNCH_TIMEOUT_S)
    return main(argv)


def _write_oof_only(out: Path, cfg: TrainConfig, prepared, results, notes) -> str:
    scores = {}
    for result in results:
        rows = np.flatnonzero(prepared.parts == result.fold)
        for row, probability in zip(rows, result.val_probabilities, strict=True):
            scores[prepared.records[row].rel_path] = probability
    (out / "oof.json").write_text(json.dumps(scores))
    return "oof only"


def _train_args(data: Path, out: Path, cache: Path, **settings: object) -> list[str]:
    args = ["train", "--data", str(data), "--preset", "test", "--out", str(out), "--quiet"]
    args += ["--cache-dir", str(cache)]
    return args + [f"--set={key}={value}" for key, value in settings.items()]


def _oof(bundle: Path) -> dict[str, dict[str, str]]:
    with (bundle / "oof.csv").open(newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def _layout(oof: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Everything in oof.csv but the probability: columns, rows, patients, folds, labels."""
    return [{k: v for k, v in row.items() if k != "probability"} for row in oof.values()]


def _probabilities(oof: dict[str, dict[str, str]]) -> dict[str, float]:
    return {path: float(row["probability"]) for path, row in oof.items()}


def _largest_difference(scores: dict[str, float], reference: dict[str, float]) -> float:
    assert set(scores) == set(reference)
    return max(abs(scores[path] - reference[path]) for path in reference)


def _one_process_oof(data: Path, cfg: TrainConfig, cache: Path) -> dict[str, float]:
    """What `ml train` scores out of fold in one process, by the same functions, no bundle."""
    prepared = prepare(data, cfg, cache_dir=cache, progress=False)
    scores = {}
    for fold in range(1, cfg.folds + 1):
        rows = fold_data(prepared, fold)
        result, _ = train_fold(rows, cfg, torch.device("cpu"), io.StringIO(), progress=False)
        for row, probability in zip(rows.val_rows, result.val_probabilities, strict=True):
            scores[prepared.records[row].rel_path] = probability
    return scores


def _files(bundle: Path) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_folds_mode_resumes_and_matches_one_process(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path
) -> None:
    """The two folds left go to ranks 0 and 1. Each fold is the very computation one process
    makes (same seeds, CPU), so the predictions agree to the last bit; 1e-6 is allowed."""
    out = tmp_path / "folds"
    shutil.copytree(tiny_bundle, out)
    for fold in (2, 3):
        (out / f"fold_{fold}.safetensors").unlink()
        (out / "logs" / f"fold_{fold}.result.json").unlink()
    (out / "manifest.json").unlink()
    args = _train_args(phantom_data, out, tmp_path / "cache")
    stdout = _torchrun(*args, "--resume", "--distributed", "folds")
    assert stdout.count("training 3 folds on 2 processes (folds mode") == 1  # rank 0 prints
    assert "fold 1: already trained" in stdout and "fold 3: trained by rank 1" in stdout
    load_bundle(out)
    single, spread = _oof(tiny_bundle), _oof(out)
    assert _layout(spread) == _layout(single)
    assert _largest_difference(_probabilities(spread), _probabilities(single)) <= 1e-6
    for fold in (2, 3):
        with safe_open(str(out / f"fold_{fold}.safetensors"), "pt") as handle:
            assert handle.metadata()["distributed"] == "folds mode, 2 processes"
    assert _files(out) == _files(tiny_bundle)


@pytest.mark.slow
def test_data_mode_matches_one_process_and_a_broken_sync_does_not(
    tiny_bundle: Path, phantom_data: Path, tmp_path: Path
) -> None:
    """Two processes, each on its half of every batch of the single-process run, gradients
    averaged: the same training as one process, up to rounding. With the sync cut, it is not."""
    cache = tmp_path / "cache"
    out = tmp_path / "data"
    stdout = _launch(main, _train_args(phantom_data, out, cache, **DATA_MODE), tmp_path / "logs")
    assert "training 3 folds on 2 processes (data mode" in stdout[0]  # the default mode
    assert "fold 3 epoch 2/2" in stdout[0] and stdout[1] == ""  # rank 0 alone prints
    load_bundle(out)
    assert _files(out) == _files(tiny_bundle)  # the same files, each written by rank 0 alone
    together = _oof(out)
    assert _layout(together) == _layout(_oof(tiny_bundle))
    reference = _one_process_oof(phantom_data, make_config("test", **DATA_MODE), cache)
    assert _largest_difference(_probabilities(together), reference) <= DATA_MODE_TOLERANCE
    with safe_open(str(out / "fold_1.safetensors"), "pt") as handle:
        assert handle.metadata()["distributed"] == "data mode, 2 processes"

    broken = tmp_path / "broken"
    _launch(_train_unsynced, _train_args(phantom_data, broken, cache, **DATA_MODE), tmp_path)
    unsynced = json.loads((broken / "oof.json").read_text())
    assert _largest_difference(unsynced, reference) > 20 * DATA_MODE_TOLERANCE


@pytest.mark.slow
def test_a_silent_process_stops_the_others_within_the_timeout(
    phantom_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    argv = [*_train_args(phantom_data, out, tmp_path / "cache"), "--dist-timeout", "0.1"]
    start = time.monotonic()
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match=r"(?i)timed out"):
        _launch(_hang_on_rank_1, argv, tmp_path / "logs")  # rank 0 gives up after 6 s
    assert time.monotonic() - start < LAUNCH_TIMEOUT_S / 2
    assert not (out / "fold_1.safetensors").exists()
