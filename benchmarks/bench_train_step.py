"""Training-step throughput: our memory format and precision against plain fp32 NCHW.

    python benchmarks/bench_train_step.py --backbone tf_efficientnet_lite0 --image-size 224
    python benchmarks/bench_train_step.py --backbone tf_efficientnet_b3 --image-size 384  # GPU

"plain" is a contiguous (NCHW) model and batch in fp32. "ours" is what `ml train` does:
channels_last, plus bf16/fp16 autocast on CUDA. Same model weights, same random batch, same
optimiser; forward, backward and step are timed after warm-up, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from ml.models import build_model
from ml.train import FocalLoss


def steps_per_second(
    model: torch.nn.Module, batch: torch.Tensor, labels: torch.Tensor, *, amp: bool, steps: int
) -> float:
    device = batch.device
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = FocalLoss()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    autocast = torch.autocast("cuda", dtype=dtype) if amp and dtype else nullcontext()
    model.train()

    def step() -> None:
        with autocast:
            loss = loss_fn(model(batch), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    batch = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = (torch.rand(args.batch_size, device=device) > 0.5).float()
    built = build_model(args.backbone, pretrained="none")
    plain_model = built.model.to(device)
    state = {k: v.clone() for k, v in plain_model.state_dict().items()}
    plain = steps_per_second(plain_model, batch, labels, amp=False, steps=args.steps)
    ours_model = build_model(args.backbone, pretrained="none").model.to(device)
    ours_model.load_state_dict(state)
    ours_model = ours_model.to(memory_format=torch.channels_last)
    ours_batch = batch.contiguous(memory_format=torch.channels_last)
    ours = steps_per_second(ours_model, ours_batch, labels, amp=True, steps=args.steps)
    images = args.batch_size
    what = "channels_last + bf16 autocast" if device.type == "cuda" else "channels_last"
    print(f"{args.backbone} at {args.image_size} px, batch {images}, on {device}")
    print(f"plain fp32 NCHW: {plain * images:.1f} images/s")
    print(f"ours ({what}): {ours * images:.1f} images/s")
    print(f"ratio ours/plain: {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
