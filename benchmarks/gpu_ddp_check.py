"""`ml train --distributed data` under torchrun with SyncBatchNorm, on one GPU.

The lent GPU machines have a single GPU, so this wrapper puts every torchrun rank on cuda:0
(the app itself refuses a LOCAL_RANK beyond the visible GPUs). NCCL 2.28 refuses two ranks on
one GPU (`ncclInvalidUsage`), so `CHECK_BACKEND=gloo` lets gloo carry the same CUDA tensors:
DistributedDataParallel and timm's SyncBatchNorm conversion then run as on several GPUs.
`CHECK_NO_SYNC_BN=1` leaves BatchNorm unsynchronised, a control that must differ from the
one-process run.

    torchrun --standalone --nproc-per-node 2 benchmarks/gpu_ddp_check.py train ARGS...
"""

from __future__ import annotations

import os
import sys

import torch

import ml.train.distributed
import ml.train.loop
from ml.cli.main import main


def _shared_gpu(device_name: str, place: ml.train.distributed.Place) -> torch.device:
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    return device


ml.train.distributed._local_device = _shared_gpu
if os.environ.get("CHECK_BACKEND"):
    # NCCL refuses two ranks on one GPU; gloo moves the same CUDA tensors through the host.
    _init = torch.distributed.init_process_group

    def _init_with(backend: str, **options: object) -> None:
        _init(os.environ["CHECK_BACKEND"], **options)

    ml.train.distributed.dist.init_process_group = _init_with
if os.environ.get("CHECK_NO_SYNC_BN") == "1":
    ml.train.loop.convert_sync_batchnorm = lambda model: model

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
