#!/usr/bin/env python3
"""desync against PyTorch, side by side in one interleaved run on this machine.

Three comparisons, each on the same model, batch, optimizer (SGD, lr 0.01, momentum 0.9, a
constant learning rate) and thread count, desync built on the same LibTorch as the PyTorch
that runs the reference (the wheel in .deps/venv):

  single       one worker, --threads intra-op threads: seconds per training step of desync's
               `single` algorithm (`desync train --workers 1`) against the same loop in PyTorch
               Python (bench/pytorch_reference.py --mode single), for the CNN (no BatchNorm)
               and ResNet-18.
  ddp          2 workers x 1 thread, batch 64 per worker: samples/s of desync's `ddp` against
               torch.nn.parallel.DistributedDataParallel over Gloo.
  limit        the no-communication limit: 2 independent desync `single` workers running at the
               same time (samples/s added up); desync DDP as a fraction of it.

Interleaving: every round runs each variant once, the two frameworks back to back, alternating
which goes first, so drift in the machine's speed touches both alike. A desync run's figure is
its steady state: the rate between the training clock at step `warmup` and at the last step,
read from metrics.jsonl (desync's train clock counts step time only, not start-up or
evaluation). The PyTorch side runs `warmup` untimed steps, then the timed ones.

Rerun (from the repository root, after `make build`):
    .deps/venv/bin/python bench/vs_pytorch.py --rounds 5 --markdown docs/results/vs_pytorch.md
Medians over rounds, with the min..max spread; JSON with every round in
build/bench-results/vs_pytorch.json. Benchmarks never pass or fail on time.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "bench", "pytorch_reference.py")

# Per model: the desync settings that make the same task as the reference's fixed batch
# (synthetic inputs of that shape, 10 classes), and how many steps make a round.
MODELS = {
    "cnn": {
        "shape": "[1, 28, 28]",
        "desync": ["name = \"cnn\"", "batch_norm = false"],
        "reference": ["--model", "cnn", "--no-batch-norm"],
        "warmup": 10,
        "steps": 90,
    },
    "resnet18": {
        "shape": "[3, 32, 32]",
        "desync": ["name = \"resnet18\""],
        "reference": ["--model", "resnet18"],
        "warmup": 1,
        "steps": 4,
    },
}


def desync_args(model, workers, threads, batch, algorithm, out):
    """`desync train` on a config written next to the run: every key the comparison depends
    on is set here, so no example's defaults leak in."""
    m = MODELS[model]
    config = out + ".toml"
    with open(config, "w") as f:
        f.write(CONFIG.format(steps=m["warmup"] + m["steps"], log_every=m["warmup"],
                              threads=threads, train=max(4096, batch * workers * 8),
                              shape=m["shape"], batch=batch, algorithm=algorithm,
                              model="\n".join(m["desync"])))
    return ["train", config, "--workers", str(workers), "--quiet", "--out", out]


CONFIG = """
[run]
steps = {steps}
log_every = {log_every}
threads = {threads}
[data]
dataset = "synthetic"
synthetic_train = {train}
synthetic_test = 64
synthetic_shape = {shape}
batch_size = {batch}
[model]
{model}
[optimizer]
name = "sgd"
lr = 0.01
momentum = 0.9
[schedule]
name = "constant"
[algorithm]
name = "{algorithm}"
[eval]
every = 0
limit = 64
[checkpoint]
enabled = false
"""


def steady_rate(run_dir, warmup):
    """Samples per second between the training clock at step `warmup` and at the last step."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [r for r in map(json.loads, f) if r["type"] == "train"]
    start = next(r for r in records if r["step"] == warmup)
    end = records[-1]
    return (end["samples"] - start["samples"]) / (end["elapsed"] - start["elapsed"])


# Where a desync step's time goes, per run kind: lists (one per round) of milliseconds per step.
BREAKDOWN = {"ddp": [], "limit": []}
PARTS = ["compute", "optimizer", "wait", "other"]


def time_per_step(run_dir):
    """Milliseconds per step of each part of summary.json's time breakdown (mean over ranks;
    the whole run, warm-up included), and of the communication in flight."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    mean = lambda values: sum(values) / len(values)
    parts = {k: 1e3 * mean(s["time_breakdown_seconds"][k]) / s["steps"] for k in PARTS}
    parts["in flight"] = 1e3 * mean(s["comm_in_flight_seconds"]) / s["steps"]
    return parts


def run_desync(binary, model, workers, threads, batch, algorithm, tmp, tag):
    out = os.path.join(tmp, tag)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [binary] + desync_args(model, workers, threads, batch, algorithm, out)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), done.stdout + done.stderr))
    if tag in BREAKDOWN:
        BREAKDOWN[tag].append(time_per_step(out))
    return steady_rate(out, MODELS[model]["warmup"])


def run_independent(binary, model, workers, batch, tmp):
    """`workers` single-worker desync runs at the same time; their samples/s added up."""
    procs, outs = [], []
    for w in range(workers):
        out = os.path.join(tmp, "independent-%d" % w)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [binary] + desync_args(model, 1, 1, batch, "single", out)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outs.append(out)
    for p in procs:
        log, _ = p.communicate()
        if p.returncode != 0:
            sys.exit("failed: independent desync worker\n%s" % log.decode())
    BREAKDOWN["limit"].append(time_per_step(outs[0]))
    return sum(steady_rate(o, MODELS[model]["warmup"]) for o in outs)


def run_reference(python, mode, model, workers, threads, batch, tmp):
    """samples/s of the PyTorch reference, over one round of the model's step count."""
    m = MODELS[model]
    out = os.path.join(tmp, "reference.json")
    cmd = [python, REFERENCE, "--mode", mode, "--workers", str(workers), "--threads",
           str(threads), "--batch-size", str(batch), "--warmup", str(m["warmup"]),
           "--steps", str(m["steps"]), "--rounds", "1", "--json", out] + m["reference"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), done.stdout + done.stderr))
    with open(out) as f:
        seconds = json.load(f)["round_seconds_per_step"][0]
    return workers * batch / seconds


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": values}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--desync", default=os.path.join(ROOT, "build", "desync"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, single worker")
    p.add_argument("--batch-size", type=int, default=64, help="per worker")
    p.add_argument("--models", default="cnn,resnet18", help="for the single-worker comparison")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench-results",
                                                  "vs_pytorch.json"))
    p.add_argument("--markdown", help="also write the tables to this file")
    a = p.parse_args()
    python = sys.executable
    batch = a.batch_size

    # name -> (desync thunk, pytorch thunk); each returns samples/s.
    tmp = tempfile.mkdtemp(prefix="desync-vs-pytorch-")
    variants = {}
    for model in a.models.split(","):
        variants["single " + model] = (
            lambda model=model: run_desync(a.desync, model, 1, a.threads, batch, "single", tmp,
                                           "single"),
            lambda model=model: run_reference(python, "single", model, 1, a.threads, batch, tmp))
    variants["ddp cnn"] = (
        lambda: run_desync(a.desync, "cnn", 2, 1, batch, "ddp", tmp, "ddp"),
        lambda: run_reference(python, "ddp", "cnn", 2, 1, batch, tmp))
    variants["limit cnn"] = (
        lambda: run_independent(a.desync, "cnn", 2, batch, tmp),
        lambda: run_reference(python, "independent", "cnn", 2, 1, batch, tmp))

    results = {name: {"desync": [], "pytorch": []} for name in variants}
    try:
        for r in range(a.rounds):
            for name, (ours, theirs) in variants.items():
                order = [("desync", ours), ("pytorch", theirs)]
                if r % 2:
                    order.reverse()
                for side, thunk in order:
                    results[name][side].append(thunk())
            print("round %d/%d done" % (r + 1, a.rounds), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    stats = {name: {side: summary(v) for side, v in sides.items()}
             for name, sides in results.items()}
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    import torch  # the reference's version, for the record

    meta = {"commit": commit, "torch": torch.__version__, "cores": os.cpu_count(),
            "machine": platform.machine(), "rounds": a.rounds, "batch_per_worker": batch,
            "threads_single": a.threads}
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json + ".tmp", "w") as f:
        json.dump({"meta": meta, "results": stats, "desync_breakdown_ms_per_step": BREAKDOWN}, f,
                  indent=2)
    os.replace(a.json + ".tmp", a.json)

    text = tables(stats, meta, batch)
    print(text)
    if a.markdown:
        with open(a.markdown + ".tmp", "w") as f:
            f.write(text)
        os.replace(a.markdown + ".tmp", a.markdown)


def fmt_rate(s):
    return "%.0f (%.0f..%.0f)" % (s["median"], s["min"], s["max"])


def fmt_ms(s, batch):
    # seconds per step = batch / samples per second; the spread flips.
    return "%.1f (%.1f..%.1f)" % (1e3 * batch / s["median"], 1e3 * batch / s["max"],
                                  1e3 * batch / s["min"])


def tables(stats, meta, batch):
    lines = [
        "desync vs PyTorch %s (same wheel), commit %s, %d cores, %d interleaved rounds; "
        "medians (min..max)." % (meta["torch"], meta["commit"], meta["cores"], meta["rounds"]),
        "Command: `.deps/venv/bin/python bench/vs_pytorch.py --rounds %d`." % meta["rounds"],
        "",
        "Single worker, %d thread(s), batch %d: milliseconds per training step."
        % (meta["threads_single"], batch),
        "",
        "| model | desync | PyTorch (Python) | desync / PyTorch time |",
        "|---|---|---|---|",
    ]
    for name, s in stats.items():
        if name.startswith("single "):
            ratio = s["pytorch"]["median"] / s["desync"]["median"]
            lines.append("| %s | %s | %s | %.3f |" % (name[7:], fmt_ms(s["desync"], batch),
                                                      fmt_ms(s["pytorch"], batch), ratio))
    ddp, limit = stats["ddp cnn"], stats["limit cnn"]
    lines += [
        "",
        "CNN (no BatchNorm), 2 workers x 1 thread, batch %d per worker: samples/s." % batch,
        "",
        "| run | desync | PyTorch (Python) |",
        "|---|---|---|",
        "| data parallel (desync `ddp`, PyTorch DDP over Gloo) | %s | %s |"
        % (fmt_rate(ddp["desync"]), fmt_rate(ddp["pytorch"])),
        "| no-communication limit (2 independent single workers) | %s | %s |"
        % (fmt_rate(limit["desync"]), fmt_rate(limit["pytorch"])),
        "",
        "desync DDP / PyTorch DDP: %.3f. desync DDP / desync limit: %.3f."
        % (ddp["desync"]["median"] / ddp["pytorch"]["median"],
           ddp["desync"]["median"] / limit["desync"]["median"]),
        "",
        "Where a desync step goes (ms per step, mean over ranks, median over rounds; from "
        "summary.json's time_breakdown_seconds, warm-up included; \"in flight\" is communication "
        "running, overlapped or not):",
        "",
        "| run | " + " | ".join(PARTS + ["in flight"]) + " |",
        "|---|" + "---|" * (len(PARTS) + 1),
    ]
    for kind, label in (("ddp", "desync `ddp`"), ("limit", "one independent `single` worker")):
        rounds = BREAKDOWN[kind]
        cells = ["%.1f" % statistics.median(r[p] for r in rounds) for p in PARTS + ["in flight"]]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
