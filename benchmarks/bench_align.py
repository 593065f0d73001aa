"""Alignment cost vs its floor: time, and peak memory as the number of images grows.

Time: ``correlation_statistics`` (the lock-step pass of ``align(method="correlation")``,
without the assignment solve) over N images / plain forward passes of both models over the
same images, split into the same 4 micro-batches that the lock-step pass uses (on CPU small
batches are faster, so this is the honest floor; eval mode, no grad). Both sides run in one
process, alternating, and the median of ``--repeats`` repetitions is reported, for wall time
and for the process's CPU time (less sensitive to other processes on a shared machine).
Goal (issue 15): ResNet32 on 10k images <= 1.2.

Interleaved (the goal row): one ``align`` call whose data stream, before handing each batch
to the alignment, runs and times the plain forward passes of both models on that batch. The
alignment's time is the call's time minus those forward passes (so it includes the one-off
trace, the BatchNorm folding and the assignment solve); both sides then see the same
seconds of the machine, batch by batch. On a shared virtual machine whose speed drifts by
+-30% over tens of seconds (measured here: plain forward passes of 11.4 to 16.3 s for the
same 10k images, six runs in a row) the whole-call ratio of separate runs swings from 1.18
to 1.55 for the same code; the interleaved ratio is the one to read. Both are reported.

Walk (info): the same per-batch interleaving with the lock-step walk alone (no statistics
summed), ``--walk-repeats`` passes, median: how the alignment's time splits into the walk of
both networks and the summing of the correlations.

Memory: each measurement runs in fresh subprocesses (median of ``--memory-repeats``); the
peak RSS growth over the process's
RSS just before the measured work (data and models loaded, one warm-up batch done; the
kernel's peak mark is reset there, so loading transients do not count) is
reported for ``align`` on ``--images`` and on ``--small-images`` images, and for the plain
forward passes. "Flat in the number of images" means align's growth on N images / its
growth on N/5 images stays near 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), where there is glibc.

    Without it the baseline RSS holds whatever freeing the loaded data set left cached in
    the heap, and the measured work reuses those pages without raising the RSS: how much
    depends on how much was freed (the 60k-image set minus the subset), so the "extra
    memory" of a small subset came out lower than that of a large one for that reason alone.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _setup(arch: str, images: int, batch: int, dataset: str):  # type: ignore[no-untyped-def]
    from neuralign.data import TensorLoader, balanced_subset, load_dataset
    from neuralign.models import create_model
    from neuralign.perm import discover_spec

    ds = load_dataset(dataset, "train")
    ds = balanced_subset(ds, n=min(images, len(ds)), seed=0)
    kw = {"num_classes": 10, "in_channels": ds.images.shape[1]}
    torch.manual_seed(0)
    a = create_model(arch, **kw).eval()
    torch.manual_seed(1)
    b = create_model(arch, **kw).eval()
    loader = TensorLoader(ds, batch_size=batch)
    x0 = next(iter(loader))[0]
    spec = discover_spec(a, x0[:2])
    with torch.no_grad():  # warm-up
        a(x0)
        b(x0)
    return a, b, loader, spec


def _forward(a: torch.nn.Module, b: torch.nn.Module, loader) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        for x, _ in loader:
            # the same micro-batches as the lock-step pass (4 per batch)
            for chunk in x.split(-(-x.shape[0] // 4)):
                a(chunk)
                b(chunk)


def _interleaved(a, b, loader, spec) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """``(forward wall, align wall, forward CPU, align CPU)`` of one interleaved align call."""
    from neuralign.alignment import align

    acc = {"wall": 0.0, "cpu": 0.0}

    def stream():  # type: ignore[no-untyped-def]
        for x, y in loader:
            w0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                for chunk in x.split(-(-x.shape[0] // 4)):
                    a(chunk)
                    b(chunk)
            acc["wall"] += time.perf_counter() - w0
            acc["cpu"] += time.process_time() - c0
            yield x, y

    w0, c0 = time.perf_counter(), time.process_time()
    align(a, b, stream(), method="correlation", spec=spec)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return acc["wall"], wall - acc["wall"], acc["cpu"], cpu - acc["cpu"]


def _interleaved_walk(a, b, loader, spec) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """``(forward wall, walk wall)``: per batch, the plain forward passes of both models, then
    the alignment's lock-step walk of the same micro-batches with no statistics (a callback
    that does nothing): what the walk itself costs, before any correlation is summed."""
    from neuralign.alignment._lockstep import LockstepRunner

    runner = LockstepRunner(a, b, spec, pre_activation=False)
    fwd = walk = 0.0
    with torch.no_grad():
        for x, _ in loader:
            chunks = x.split(-(-x.shape[0] // 4))
            t0 = time.perf_counter()
            for chunk in chunks:
                a(chunk)
                b(chunk)
            t1 = time.perf_counter()
            for chunk in chunks:
                runner.run(chunk, lambda *_: None)
            t2 = time.perf_counter()
            fwd += t1 - t0
            walk += t2 - t1
    return fwd, walk


def _child(arch: str, mode: str, images: int, batch: int, dataset: str) -> dict[str, float]:
    from neuralign.alignment import align

    a, b, loader, spec = _setup(arch, images, batch, dataset)
    gc.collect()
    _trim_heap()
    # the peak of the measured work only, not of loading the data set before it
    reset = _reset_peak()
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if mode == "forward":
        _forward(a, b, loader)
    else:
        align(a, b, loader, method="correlation", spec=spec)
    dt = time.perf_counter() - t0
    if reset:
        peak = _status_mb("VmHWM")
    else:  # process-lifetime peak: includes loading transients
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": dt, "extra_mb": max(peak - base, 0.0), "base_mb": base}


def _run_child(arch: str, mode: str, images: int, args: argparse.Namespace) -> dict[str, float]:
    """The median over ``--memory-repeats`` fresh subprocesses of each measured value: one
    process's RSS growth varies by about +-10 MB around ~50 MB (allocator and page reuse;
    TinyTen's align on 10k images measured 33-55 MB in four runs in a row)."""
    cmd = [sys.executable, __file__, "--child", arch, mode, "--images", str(images)]
    cmd += ["--batch-size", str(args.batch_size), "--dataset", args.dataset]
    runs = []
    for _ in range(max(1, args.memory_repeats)):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=["tinyten", "resnet32"])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--small-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3, help="whole-call repetitions per side")
    p.add_argument(
        "--interleaved-repeats", type=int, default=5, help="interleaved align calls (goal row)"
    )
    p.add_argument(
        "--walk-repeats", type=int, default=3, help="interleaved walk-only passes (info row)"
    )
    p.add_argument(
        "--memory-repeats", type=int, default=3, help="subprocesses per memory value (median)"
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--child", nargs=2, metavar=("ARCH", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = _child(args.child[0], args.child[1], args.images, args.batch_size, args.dataset)
        print(json.dumps(res))
        return []
    from _common import device_name, write_rows

    from neuralign.alignment import align

    rows = []
    for arch in args.models:
        load0 = os.getloadavg()[0]
        a, b, loader, spec = _setup(arch, args.images, args.batch_size, args.dataset)
        wall: dict[str, list[float]] = {"forward": [], "align": []}
        cpu: dict[str, list[float]] = {"forward": [], "align": []}
        sides = {
            "forward": lambda: _forward(a, b, loader),
            "align": lambda: align(a, b, loader, method="correlation", spec=spec),
        }
        for i in range(args.repeats):
            for side in ("forward", "align") if i % 2 == 0 else ("align", "forward"):
                w0, c0 = time.perf_counter(), time.process_time()
                sides[side]()
                wall[side].append(time.perf_counter() - w0)
                cpu[side].append(time.process_time() - c0)
        inter = [_interleaved(a, b, loader, spec) for _ in range(args.interleaved_repeats)]
        walks = [_interleaved_walk(a, b, loader, spec) for _ in range(args.walk_repeats)]
        inter_all = sorted(r[1] / r[0] for r in inter)
        inter_wall = statistics.median(r[1] / r[0] for r in inter)
        inter_cpu = statistics.median(r[3] / r[2] for r in inter)
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        row: dict[str, object] = {
            "benchmark": "align_floor",
            "model": arch,
            "dataset": args.dataset,
            "images": args.images,
            "batch_size": args.batch_size,
            "device": device_name(torch.device("cpu")),
            "repeats": args.repeats,
            "forward_s": round(med["forward"], 2),
            "align_s": round(med["align"], 2),
            "time_ratio": round(med["align"] / med["forward"], 3),
            "cpu_time_ratio": round(med_cpu["align"] / med_cpu["forward"], 3),
            "interleaved_ratio": round(inter_wall, 3),
            "interleaved_cpu_ratio": round(inter_cpu, 3),
            "interleaved_forward_s": round(statistics.median(r[0] for r in inter), 2),
            "interleaved_align_s": round(statistics.median(r[1] for r in inter), 2),
            "interleaved_min": round(inter_all[0], 3),
            "interleaved_max": round(inter_all[-1], 3),
        }
        if walks:
            row["walk_ratio"] = round(statistics.median(w / f for f, w in walks), 3)
        if not args.no_memory:
            fwd = _run_child(arch, "forward", args.images, args)
            big = _run_child(arch, "align", args.images, args)
            small = _run_child(arch, "align", args.small_images, args)
            row.update(
                {
                    "forward_extra_mb": round(fwd["extra_mb"], 1),
                    "align_extra_mb": round(big["extra_mb"], 1),
                    "align_extra_mb_small": round(small["extra_mb"], 1),
                    "small_images": args.small_images,
                    "memory_ratio": round(big["extra_mb"] / max(fwd["extra_mb"], 1.0), 3),
                    "memory_growth": round(big["extra_mb"] / max(small["extra_mb"], 1.0), 3),
                }
            )
        row["load_before"] = round(load0, 2)
        row["load_after"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        msg = (
            f"{arch:9s} interleaved: align / forward passes = {row['interleaved_ratio']}x "
            f"(range {row['interleaved_min']}-{row['interleaved_max']} over "
            f"{args.interleaved_repeats} calls; CPU time {row['interleaved_cpu_ratio']}x); whole calls: align {row['align_s']}s / "
            f"forward passes {row['forward_s']}s = {row['time_ratio']}x "
            f"(CPU time {row['cpu_time_ratio']}x)"
        )
        if "walk_ratio" in row:
            msg += f"; lock-step walk without statistics / forward passes = {row['walk_ratio']}x"
        if not args.no_memory:
            msg += (
                f"; extra memory {row['align_extra_mb']} MB ({args.images} images) vs "
                f"{row['align_extra_mb_small']} MB ({args.small_images}) = "
                f"{row['memory_growth']}x, vs forward {row['forward_extra_mb']} MB"
            )
        print(msg + f" (load {row['load_before']}->{row['load_after']})", flush=True)
    write_rows("align_floor", rows)
    return rows


if __name__ == "__main__":
    main()
