"""PyTorch's Python DDP on the model of bench_ddp.cpp (MLP 784-1024-1024-10, per-rank batch 64, 1 MB buckets,
Gloo over loopback by default, one intra-op thread per rank): 1 rank without DDP, then N ranks.

    python3 benchmarks/bench_ddp_torch.py [steps] [--device cpu|cuda] [--backend gloo|nccl] [--nproc N]

With --device cuda each rank trains on GPU LOCAL_RANK modulo the visible GPUs, as bench_ddp does.
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

BATCH = 64


def net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                               torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def device_of(args, rank):
    return torch.device("cuda", rank % torch.cuda.device_count()) if args.device == "cuda" else torch.device("cpu")


def measure(model, steps, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(BATCH, 784).to(device), torch.randint(10, (BATCH,)).to(device)
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model(x).sum().item()  # waits for the device's queued work
    return (time.perf_counter() - t0) / steps


def rank_main(rank, world, port, args, queue):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = device_of(args, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend, rank=rank, world_size=world)
    model = DDP(net().to(device), bucket_cap_mb=1, device_ids=[device.index] if device.type == "cuda" else None)
    step = measure(model, args.steps, device)
    if rank == 0:
        queue.put(step)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("steps", type=int, nargs="?", default=40)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is visible")
    torch.set_num_threads(1)
    device = device_of(args, 0)
    one = measure(net().to(device), args.steps, device)
    print(f"pytorch 1 rank on {args.device}: {one * 1e3:.2f} ms/step, {BATCH / one:.0f} samples/s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(rank_main, args=(args.nproc, port, args, queue), nprocs=args.nproc)
    many = queue.get()
    print(f"pytorch {args.nproc} ranks (Python DDP, {args.device}, {args.backend}): {many * 1e3:.2f} ms/step, "
          f"{args.nproc * BATCH / many:.0f} samples/s (global)")


if __name__ == "__main__":
    main()
