"""Run the benchmarks and print one table of every ratio with its goal beside it.

Usage: ``python benchmarks/run.py [NAME ...] [--table PATH]`` with names from
``BENCHMARKS`` (default: ``DEFAULT``, the ratios with goals in issue 15). Each benchmark
prints its own lines and appends its rows to ``results/<name>.csv``; the summary table is
printed at the end and, with ``--table``, written (Markdown) to that file. ``make bench``
writes it to ``benchmarks/results/bench_table.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = {
    "data": ("bench_data", []),
    "train": ("bench_train", ["--models", "mlp", "tinyten", "resnet20", "resnet32", "vgg11"]),
    "path": ("bench_path", []),
    "align": ("bench_align", []),
    "curve": ("bench_curve", []),
    "barrier": ("bench_barrier", []),
    "corr_gemm": ("bench_corr_gemm", []),
    "gpu": ("bench_gpu", ["--models", "tinyten", "resnet32", "--tasks", "train", "curve", "align"]),
}
DEFAULT = ["path", "align", "curve", "gpu"]

Row = dict[str, Any]
Entry = tuple[str, str, str, str, str]  # quantity, model, value, goal, status


def _check(value: float, limit: float) -> str:
    return "met" if value <= limit else "NOT met"


def _path(rows: list[Row]) -> list[Entry]:
    out: list[Entry] = []
    for r in rows:
        m = r["model"]
        out.append(
            (
                "path point (BN recomputation + test) / 2 plain forward passes, wall",
                m,
                f"{r['path_ratio']:.3f}",
                "<= 1.10 (CPU)",
                _check(r["path_ratio"], 1.10),
            )
        )
        out.append(
            (
                "  same, CPU time",
                m,
                f"{r['path_cpu_time_ratio']:.3f}",
                "<= 1.10 (CPU)",
                _check(r["path_cpu_time_ratio"], 1.10),
            )
        )
        same = r["multi_max_rel_loss_diff"] <= 1e-5 and bool(r["multi_acc_identical"])
        out.append(
            (
                f"{r['multi_points']} t values in one vmapped pass vs one by one: max rel. loss diff",
                m,
                f"{r['multi_max_rel_loss_diff']:.2g} (acc identical: {r['multi_acc_identical']})",
                "<= 1e-5, identical acc",
                "met" if same else "NOT met",
            )
        )
        out.append(
            (
                "  its time / one by one (CPU: no gain expected)",
                m,
                f"{r['multi_time_ratio']:.3f}",
                "- (GPU only)",
                "info",
            )
        )
    return out


def _align(rows: list[Row]) -> list[Entry]:
    out: list[Entry] = []
    for r in rows:
        m = r["model"]
        goal = "<= 1.2 (CPU)" if m == "resnet32" else "-"
        key = "interleaved_ratio" if "interleaved_ratio" in r else "time_ratio"
        ckey = "interleaved_cpu_ratio" if key == "interleaved_ratio" else "cpu_time_ratio"
        how = "interleaved per batch" if key == "interleaved_ratio" else "whole calls"
        status = _check(r[key], 1.2) if m == "resnet32" else "info"
        spread = (
            f" (range {r['interleaved_min']:.3f}-{r['interleaved_max']:.3f})"
            if "interleaved_min" in r
            else ""
        )
        out.append(
            (
                f"alignment ({r['images']} images) / forward floor, wall ({how}, median)",
                m,
                f"{r[key]:.3f}{spread}",
                goal,
                status,
            )
        )
        cstatus = _check(r[ckey], 1.2) if m == "resnet32" else "info"
        out.append(("  same, CPU time", m, f"{r[ckey]:.3f}", goal, cstatus))
        if "walk_ratio" in r:
            out.append(
                (
                    "  of which the lock-step walk alone (no statistics), interleaved",
                    m,
                    f"{r['walk_ratio']:.3f}",
                    "-",
                    "info",
                )
            )
        if key == "interleaved_ratio":
            out.append(
                (
                    "  same, whole calls (separate runs; drifts with the machine)",
                    m,
                    f"{r['time_ratio']:.3f} (CPU time {r['cpu_time_ratio']:.3f})",
                    "-",
                    "info",
                )
            )
        if "memory_growth" in r:
            out.append(
                (
                    f"alignment extra memory, {r['images']} / {r['small_images']} images",
                    m,
                    f"{r['memory_growth']:.3f} ({r['align_extra_mb']} / {r['align_extra_mb_small']} MB)",
                    "flat: <= 1.2",
                    _check(r["memory_growth"], 1.2),
                )
            )
            out.append(
                (
                    "  alignment / forward extra memory",
                    m,
                    f"{r['memory_ratio']:.3f} ({r['align_extra_mb']} / {r['forward_extra_mb']} MB)",
                    "-",
                    "info",
                )
            )
    return out


def _curve(rows: list[Row]) -> list[Entry]:
    return [
        (
            "curve training epoch / endpoint training epoch (CPU equivalent)",
            r["model"],
            f"{r['curve_ratio']:.3f} (CPU time {r['curve_cpu_time_ratio']:.3f})",
            "<= 1.25 on GPU",
            "info (CPU)",
        )
        for r in rows
    ]


def _gpu(rows: list[Row]) -> list[Entry]:
    if not rows:
        return [
            (
                "GPU: lock-step alignment / forward passes of both models",
                "tinyten, resnet32",
                "not measured (no CUDA device)",
                "<= 1.5",
                "not measured",
            ),
            (
                "GPU: curve training / endpoint training",
                "tinyten, resnet32",
                "not measured (no CUDA device)",
                "<= 1.25",
                "not measured",
            ),
        ]
    ips = {(r["model"], r["task"]): float(r["img_per_s"]) for r in rows}
    dev = rows[0]["device"]
    out: list[Entry] = []
    for m in sorted({r["model"] for r in rows}):
        if (m, "align") in ips and (m, "forward_both") in ips:
            v = ips[(m, "forward_both")] / ips[(m, "align")]
            out.append(
                (
                    f"GPU ({dev}): alignment / forward of both",
                    m,
                    f"{v:.3f}",
                    "<= 1.5",
                    _check(v, 1.5),
                )
            )
        if (m, "curve") in ips and (m, "train") in ips:
            v = ips[(m, "train")] / ips[(m, "curve")]
            out.append(
                (
                    f"GPU ({dev}): curve / endpoint training",
                    m,
                    f"{v:.3f}",
                    "<= 1.25",
                    _check(v, 1.25),
                )
            )
    return out


SUMMARIES: dict[str, Callable[[list[Row]], list[Entry]]] = {
    "path": _path,
    "align": _align,
    "curve": _curve,
    "gpu": _gpu,
}


def table(entries: list[Entry]) -> str:
    """A Markdown table of ``entries``."""
    head = ("quantity", "model", "value", "goal", "status")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(e) + " |" for e in entries]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: {' '.join(DEFAULT)})")
    p.add_argument("--table", type=Path, help="also write the summary table to this file")
    args = p.parse_args(argv)
    names = args.names or DEFAULT
    entries: list[Entry] = []
    load0 = os.getloadavg()
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        module, bargs = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        if name == "gpu" and not torch.cuda.is_available():
            print("no CUDA device: GPU ratios not measured", flush=True)
            rows: list[Row] = []
        else:
            rows = importlib.import_module(module).main(bargs) or []
        if name in SUMMARIES:
            entries += SUMMARIES[name](rows)
    load1 = os.getloadavg()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    header = (
        f"Benchmarks {stamp}: torch {torch.__version__}, {platform.machine()} CPU with "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s); load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (1 min)"
    )
    text = header + "\n\n" + table(entries) + "\n"
    print("\n" + text, flush=True)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
