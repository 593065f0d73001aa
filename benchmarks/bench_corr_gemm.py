"""Inside the alignment pass: the time of the cross sums ``Σ x yᵀ`` by per-image GEMMs vs by
oneDNN's 1×1 convolution weight gradient (``correlation_stats._gram_by_conv``).

Runs ``correlation_statistics`` on ResNet32 (Fashion-MNIST, ``--images`` training images)
with the library's cross sum (``_rows_cross_sum``) and direct sums timed where the pass
calls them (the per-unit sums are the direct sums' time less the cross sum's), alternating
the two ways call by call (``--repeats`` each), and reports the median seconds of the cross
sums, of the per-unit sums beside them, and of the whole pass. The statistics of the two ways agree to float32 rounding
(the largest correlation difference is printed). An isolated micro-benchmark of the two
kernels runs on warm caches and overstates the gain; this one measures it in place.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet32")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    from _common import device_name, write_rows
    from bench_align import _setup

    from neuralign.alignment import correlation_stats as cs
    from neuralign.alignment.correlation import correlation_statistics

    a, b, loader, spec = _setup(args.model, args.images, 500, "fashion-mnist")
    timing = {"cross": 0.0, "sums": 0.0}
    use_conv = {"on": True}
    cross, direct, gram_by_conv = cs._rows_cross_sum, cs._direct_sums, cs._gram_by_conv

    def timed_cross(*args: torch.Tensor) -> None:  # the library's cross sum, timed
        t0 = time.perf_counter()
        cross(*args)
        timing["cross"] += time.perf_counter() - t0

    def timed_direct(x: torch.Tensor, y: torch.Tensor, part: torch.Tensor, rows: bool) -> int:
        t0 = time.perf_counter()  # all of the direct sums; the cross sum is taken out below
        m = direct(x, y, part, rows)
        timing["sums"] += time.perf_counter() - t0
        return m

    def switch(x: torch.Tensor, y: torch.Tensor) -> bool:
        return use_conv["on"] and gram_by_conv(x, y)

    results: dict[str, list[tuple[float, float, float]]] = {"gemm": [], "conv": []}
    stats = {}
    cs._rows_cross_sum, cs._direct_sums, cs._gram_by_conv = timed_cross, timed_direct, switch
    try:
        for _ in range(args.repeats):
            for way in ("gemm", "conv"):
                use_conv["on"] = way == "conv"
                timing.update(cross=0.0, sums=0.0)
                t0 = time.perf_counter()
                stats[way] = correlation_statistics(a, b, spec, loader)
                total = time.perf_counter() - t0
                unit_sums = timing["sums"] - timing["cross"]
                results[way].append((timing["cross"], unit_sums, total))
    finally:
        cs._rows_cross_sum, cs._direct_sums, cs._gram_by_conv = cross, direct, gram_by_conv
    diff = max(
        float((stats["gemm"].correlation(g) - stats["conv"].correlation(g)).abs().max())
        for g in stats["gemm"].accumulators
    )
    med = {w: [statistics.median(r[i] for r in v) for i in range(3)] for w, v in results.items()}
    row: dict[str, object] = {
        "benchmark": "corr_gemm",
        "model": args.model,
        "images": args.images,
        "repeats": args.repeats,
        "device": device_name(torch.device("cpu")),
        "gemm_cross_s": round(med["gemm"][0], 3),
        "conv_cross_s": round(med["conv"][0], 3),
        "cross_ratio": round(med["conv"][0] / med["gemm"][0], 3),
        "unit_sums_s": round(statistics.median([med["gemm"][1], med["conv"][1]]), 3),
        "gemm_pass_s": round(med["gemm"][2], 3),
        "conv_pass_s": round(med["conv"][2], 3),
        "max_corr_diff": f"{diff:.1e}",
    }
    print(
        f"{args.model}: cross sums in the pass {row['gemm_cross_s']}s (per-image GEMMs) vs "
        f"{row['conv_cross_s']}s (convolution weight gradient) = {row['cross_ratio']}x; "
        f"per-unit sums {row['unit_sums_s']}s; whole pass {row['gemm_pass_s']}s vs "
        f"{row['conv_pass_s']}s; max correlation difference {row['max_corr_diff']}"
    )
    write_rows("corr_gemm", [row])
    return [row]


if __name__ == "__main__":
    main()
