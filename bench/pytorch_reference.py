#!/usr/bin/env python3
"""PyTorch reference for the desync benchmarks: the same training step, written in plain PyTorch.

What it measures
    Seconds per training step of SGD (lr 0.01, momentum 0.9) on one fixed synthetic batch
    (standard-normal inputs, uniform random labels, seeded): zero_grad, forward, cross_entropy,
    backward, step. The models rebuild desync's own layer for layer, with the same parameter
    names (`<stage>.<layer>.<param>`) and counts:

        cnn       src/desync/models/cnn.cpp with the ModelConfig defaults of
                  src/desync/core/config.h (channels {32, 64}, batch_norm = true); 1x28x28 input
        resnet18  src/desync/models/resnet.cpp (CIFAR stem, width 64); 3x32x32 input
        mlp       src/desync/models/mlp.cpp (hidden {256, 128}); 1x28x28 input
    All three have 10 classes.

Modes
    single       one process, torch.set_num_threads(--threads).
    ddp          --workers processes, each with --threads threads, training one model with
                 torch.nn.parallel.DistributedDataParallel over Gloo on 127.0.0.1 (bucket_cap_mb
                 25, PyTorch's default; broadcast_buffers on, also the default). Each rank has
                 its own batch of --batch-size examples, so the global batch is workers x batch.
    independent  --workers processes running the `single` loop at the same time with no
                 communication at all: the throughput DDP would reach if communication were free
                 on this machine.

Timing
    --warmup untimed steps (2), then --rounds rounds of --steps steps, each timed with
    time.perf_counter. A round's figure is its wall time divided by --steps. With several
    workers, every rank times its own rounds; the ranks start each round together (a barrier
    before the clock starts, outside the timed span) and the figure reported is the slowest
    rank's (max over ranks, gathered after the round). samples/s = workers x batch / step time.
    The human line prints the median over rounds and the min..max spread.

Rerun
    .deps/venv/bin/python bench/pytorch_reference.py --mode single --model cnn --threads 1
    .deps/venv/bin/python bench/pytorch_reference.py --mode ddp --workers 2 --json ddp.json
    .deps/venv/bin/python bench/pytorch_reference.py --mode independent --workers 2
    .deps/venv/bin/python bench/pytorch_reference.py --count-params resnet18
    (`--rounds 1 --steps 3` for a quick check.) Needs only torch and the standard library.

On a machine with fewer cores than workers x threads, the workers compete for cores and the
multi-worker figures say more about the machine than about either framework.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
LR = 0.01
MOMENTUM = 0.9
DDP_BUCKET_CAP_MB = 25  # torch.nn.parallel.DistributedDataParallel's default
INPUT_SHAPES = {"cnn": (1, 28, 28), "mlp": (1, 28, 28), "resnet18": (3, 32, 32)}


# --------------------------------------------------------------------------------------------
# Models. Each is a sequence of named stages (nn.Sequential), as desync's StagedModel.


class StagedModel(nn.Module):
    """Runs its named stages in order; parameters read `<stage>.<layer>.<param>`."""

    def __init__(self, stages):
        super().__init__()
        self.stage_names = [name for name, _ in stages]
        for name, stage in stages:
            self.add_module(name, stage)

    def forward(self, x):
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x


def build_cnn(input_shape, num_classes, channels=(32, 64), batch_norm=True, head_hidden=128):
    """cnn.cpp: per channel count a block Conv3x3 (padding 1) [+ BatchNorm2d] + ReLU + MaxPool2;
    then a head Flatten, Linear(-> 128) [+ BatchNorm1d], ReLU, Linear(-> classes). The
    convolutions and the hidden Linear have no bias when BatchNorm follows them."""
    c, h, w = input_shape
    stages = []
    for i, out in enumerate(channels):
        layers = [nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        stages.append((f"block{i + 1}", nn.Sequential(*layers)))
        c, h, w = out, h // 2, w // 2
    head = [nn.Flatten(), nn.Linear(c * h * w, head_hidden, bias=not batch_norm)]
    if batch_norm:
        head.append(nn.BatchNorm1d(head_hidden))
    head += [nn.ReLU(), nn.Linear(head_hidden, num_classes)]
    stages.append(("head", nn.Sequential(*head)))
    return StagedModel(stages)


def build_mlp(input_shape, num_classes, hidden=(256, 128)):
    """mlp.cpp: Flatten, then per hidden width a stage Linear + ReLU, then a Linear head."""
    in_features = 1
    for d in input_shape:
        in_features *= d
    stages = []
    for i, width in enumerate(hidden):
        layers = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        stages.append((f"fc{i + 1}", nn.Sequential(*layers)))
        in_features = width
    head = [] if hidden else [nn.Flatten()]
    head.append(nn.Linear(in_features, num_classes))
    stages.append(("head", nn.Sequential(*head)))
    return StagedModel(stages)


class BasicBlock(nn.Module):
    """resnet.cpp's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus the input (projected by a
    1x1 convolution + BN when the stride or the width changes), then ReLU. No conv biases."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out)


def build_resnet18(input_shape, num_classes, width=64, blocks_per_layer=2):
    """resnet.cpp: stem conv3x3 + BN + ReLU (no max-pool), four layers of two BasicBlocks with
    widths width x {1, 2, 4, 8} (stride 2 at the first block of layers 2-4), then global average
    pool, flatten, linear."""
    in_channels = input_shape[0]
    stages = [("stem", nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(width), nn.ReLU()))]
    channels = width
    for layer in range(4):
        out = width << layer
        blocks = []
        for b in range(blocks_per_layer):
            stride = 2 if layer > 0 and b == 0 else 1
            blocks.append(BasicBlock(channels, out, stride))
            channels = out
        stages.append((f"layer{layer + 1}", nn.Sequential(*blocks)))
    stages.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                         nn.Linear(channels, num_classes))))
    return StagedModel(stages)


def build_model(name, batch_norm=True):
    shape = INPUT_SHAPES[name]
    if name == "cnn":
        return build_cnn(shape, NUM_CLASSES, batch_norm=batch_norm)
    if name == "mlp":
        return build_mlp(shape, NUM_CLASSES)
    return build_resnet18(shape, NUM_CLASSES)


def parameter_count(model):
    """As StagedModelImpl::parameter_count: elements of all parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# The training loop, shared by all modes.


class Trainer:
    """One model, one fixed batch, SGD; step() is one full training step."""

    def __init__(self, args, rank, ddp=False):
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)  # same initial weights on every rank
        model = build_model(args.model, batch_norm=args.batch_norm)
        generator = torch.Generator().manual_seed(args.seed + 1 + rank)  # own batch per rank
        self.inputs = torch.randn((args.batch_size,) + INPUT_SHAPES[args.model],
                                  generator=generator)
        self.targets = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)
        if ddp:
            model = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=DDP_BUCKET_CAP_MB)
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self):
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(self.inputs), self.targets)
        loss.backward()
        self.optimizer.step()

    def timed_round(self, steps):
        """Wall seconds of `steps` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - t0


def run_single(args):
    trainer = Trainer(args, rank=0)
    for _ in range(args.warmup):
        trainer.step()
    return [trainer.timed_round(args.steps) / args.steps for _ in range(args.rounds)]


def ddp_worker(rank, args, port, results):
    """One DDP rank. Rank 0 puts the per-round seconds per step (max over ranks) on `results`."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.workers, timeout=timedelta(seconds=300))
    try:
        trainer = Trainer(args, rank, ddp=True)
        for _ in range(args.warmup):
            trainer.step()
        per_step = []
        for _ in range(args.rounds):
            dist.barrier()  # start the round together; not timed
            elapsed = torch.tensor([trainer.timed_round(args.steps)], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's round
            per_step.append(elapsed.item() / args.steps)
        if rank == 0:
            results.put(per_step)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def independent_worker(rank, args, barrier, results):
    """One rank of `independent`: the single loop, no communication; each rank puts
    (rank, per-round seconds per step) on `results`. `barrier` (an OS-level barrier, no
    torch.distributed) only lines up the round starts, outside the timed span."""
    trainer = Trainer(args, rank)
    for _ in range(args.warmup):
        trainer.step()
    per_step = []
    for _ in range(args.rounds):
        barrier.wait()
        per_step.append(trainer.timed_round(args.steps) / args.steps)
    results.put((rank, per_step))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(args):
    """Spawns args.workers processes (mode ddp or independent); returns the per-round seconds
    per step, max over ranks. spawn() joins every process and, if one fails, ends the others
    and raises."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    if args.mode == "ddp":
        if sys.platform.startswith("linux"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep Gloo on loopback
        mp.spawn(ddp_worker, args=(args, free_port(), results), nprocs=args.workers, join=True)
        return results.get()
    barrier = ctx.Barrier(args.workers)
    mp.spawn(independent_worker, args=(args, barrier, results), nprocs=args.workers, join=True)
    per_rank = [results.get()[1] for _ in range(args.workers)]
    return [max(round_times) for round_times in zip(*per_rank)]


# --------------------------------------------------------------------------------------------
# Command line and output.


def write_json_atomically(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="PyTorch reference for desync's benchmarks: seconds per SGD training step "
                    "of desync's models, in one process, under PyTorch DDP (Gloo), or in "
                    "independent processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=["single", "ddp", "independent"], default="single",
                   help="single: one process; ddp: DistributedDataParallel over Gloo; "
                        "independent: --workers processes, no communication")
    p.add_argument("--model", choices=sorted(INPUT_SHAPES), default="cnn",
                   help="desync model to rebuild")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="cnn: BatchNorm after each conv and the hidden linear layer "
                        "(desync's model.batch_norm)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    p.add_argument("--workers", type=int, default=2, help="processes for ddp / independent")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the rounds")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=9, help="timed rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    p.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    p.add_argument("--count-params", metavar="MODEL", choices=sorted(INPUT_SHAPES),
                   help="print MODEL's parameter count and exit")
    p.add_argument("--list-params", action="store_true",
                   help="with --count-params: also print each parameter's name and shape")
    args = p.parse_args(argv)
    for name in ("threads", "workers", "batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_norm and args.model == "cnn" and args.batch_size < 2:
        p.error("--batch-size must be >= 2 with BatchNorm (training mode)")
    if args.mode == "single":
        args.workers = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.count_params:
        model = build_model(args.count_params, batch_norm=args.batch_norm)
        if args.list_params:
            for name, p in model.named_parameters():
                print(f"{name:<32} {tuple(p.shape)}")
        print(f"{args.count_params} {parameter_count(model)}")
        return 0

    per_step = run_single(args) if args.mode == "single" else run_workers(args)
    median = statistics.median(per_step)
    samples_per_second = args.workers * args.batch_size / median
    result = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "mode": args.mode,
        "model": args.model,
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup_steps": args.warmup,
        "round_seconds_per_step": per_step,
        "median_seconds_per_step": median,
        "samples_per_second": samples_per_second,
        "round_samples_per_second": [args.workers * args.batch_size / s for s in per_step],
        "parameters": parameter_count(build_model(args.model, batch_norm=args.batch_norm)),
        "batch_norm": args.batch_norm if args.model == "cnn" else args.model == "resnet18",
        "timing": "per round, max over ranks" if args.workers > 1 else "per round",
        "cpu_count": os.cpu_count(),
    }
    if args.mode == "ddp":
        result["bucket_cap_mb"] = DDP_BUCKET_CAP_MB
    if args.json:
        write_json_atomically(args.json, result)

    workers = f"{args.workers} workers x " if args.workers > 1 else ""
    print(f"pytorch {torch.__version__} {args.mode} · {args.model} · {workers}batch "
          f"{args.batch_size} · {args.threads} thread(s) · {args.rounds} rounds of {args.steps} "
          f"steps · median {median * 1e3:.3f} ms/step "
          f"({min(per_step) * 1e3:.3f}..{max(per_step) * 1e3:.3f}) · "
          f"{samples_per_second:.0f} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
