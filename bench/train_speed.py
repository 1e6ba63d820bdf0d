"""Measure training throughput (forward + backward + optimizer step, images/s) of an architecture.

    python -m bench.train_speed facecnn --size 64 --batch 128 [--bundle] [--in-chans 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from agekit.models import create_model


def train_images_per_second(architecture: str, size: int, batch: int = 128, shared_backbone: bool = True,
                            in_chans: int = 3, steps: int = 5, channels_last: bool = False,
                            device: str = "cpu", **kwargs) -> float:
    """Images per second of SGD steps on random data: the fastest of `steps` timed steps after a warm-up
    (the best step estimates the machine's speed when other processes compete for the cores)."""
    if in_chans != 3:
        kwargs["in_chans"] = in_chans
    model = create_model(architecture, shared_backbone=shared_backbone, **kwargs).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, in_chans, size, size, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(out.float().logsumexp(1).mean() for out in model(x).values())
        loss.backward()
        optimizer.step()

    def timed_step() -> float:
        start = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed_step()
    return batch / min(timed_step() for _ in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("architecture")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bundle", action="store_true", help="one backbone per task (shared_backbone=False)")
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rate = train_images_per_second(args.architecture, args.size, args.batch, not args.bundle, args.in_chans,
                                   args.steps, args.channels_last, args.device)
    kind = "bundle" if args.bundle else "shared"
    print(f"{args.architecture} {kind} {args.size}px batch {args.batch} on {args.device} "
          f"({torch.get_num_threads()} threads): {rate:.0f} train images/s")


if __name__ == "__main__":
    main()
