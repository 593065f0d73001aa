"""The report of a run: the paper's table (laid out like the paper's tables), figures, JSON and CSV.

``write_report(run_dir)`` reads only files in the run folder, so ``neuralign report RUN``
regenerates everything from an existing run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from neuralign.errors import ConfigError
from neuralign.experiment.labels import path_label, variant_label
from neuralign.experiment.rundir import RunDir
from neuralign.io.atomic import atomic_write_text


def _ms(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mu = sum(values) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mu, sd


def _fmt(mu: float, sd: float, n: int, digits: int = 2) -> str:
    if not math.isfinite(mu):
        return "**NaN (diverged)**" if math.isnan(mu) else f"**{mu} (diverged)**"
    return f"{mu:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{mu:.{digits}f}"


def collect(run_dir: Path) -> dict[str, Any]:
    """Gather endpoint metrics, path results (grouped over pairs) and alignment tables."""
    from neuralign.experiment.config import load_config
    from neuralign.paths import PathResult

    rd = RunDir(run_dir)
    cfg = load_config(rd.config_file)
    endpoints = {}
    for seed in cfg.endpoints.seeds:
        done = rd.done(rd.endpoint_marker(seed))
        if done is not None:
            endpoints[seed] = done
    paths: dict[tuple[str, str], list[PathResult]] = defaultdict(list)
    for i, _ in enumerate(cfg.pairs):
        for kind in cfg.curves.kinds:
            for variant in cfg.curves.variants:
                f = rd.path_file(i, variant, kind)
                if rd.is_done(f):
                    paths[(kind, variant)].append(PathResult.load(f))
    aligns: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, _ in enumerate(cfg.pairs):
        for method in ("correlation", "weight", "pam-unaligned", "pam-aligned"):
            record = rd.done(rd.align_record(i, method))
            if record is not None:
                aligns[method].append(record)
    return {"config": cfg, "endpoints": endpoints, "paths": paths, "aligns": aligns}


def table_rows(
    paths: dict[tuple[str, str], list[Any]], endpoints: dict[int, Any]
) -> list[dict[str, Any]]:
    """One row per (path kind, variant): Avg/Min accuracy, Max loss and barriers, mean ± std."""

    rows: list[dict[str, Any]] = []
    if endpoints:
        accs = [e["test_acc"] for e in endpoints.values()]
        losses = [e["test_loss"] for e in endpoints.values()]
        mu, sd = _ms(accs)
        lmu, lsd = _ms(losses)
        rows.append(
            {
                "path": "Endpoints",
                "n": len(accs),
                "avg_acc": mu,
                "avg_acc_std": sd,
                "min_acc": None,
                "min_acc_std": None,
                "max_loss": lmu,
                "max_loss_std": lsd,
                "loss_barrier": None,
                "loss_barrier_std": None,
                "error_barrier": None,
                "error_barrier_std": None,
            }
        )
    for (kind, variant), results in paths.items():
        n = len(results)
        vals = {
            "avg_acc": [r.avg_accuracy for r in results],
            "mean_acc": [r.mean("test_acc") for r in results],
            "min_acc": [r.min_accuracy for r in results],
            "max_loss": [r.max_loss for r in results],
            "loss_barrier": [r.loss_barrier for r in results],
            "error_barrier": [r.error_barrier for r in results],
            "loss_barrier_mid": [r.barrier_ainsworth("test_loss") for r in results],
        }
        if all(r.robust_acc for r in results):  # clean + PGD series (docs/robustness.md)
            vals.update(
                {
                    "endpoint_acc": [r.endpoint_accuracy for r in results],
                    "robust_endpoint_acc": [r.endpoint_robust_accuracy for r in results],
                    "robust_avg_loss": [r.avg_robust_loss for r in results],
                    "robust_loss_barrier": [r.robust_loss_barrier for r in results],
                    "robust_loss_barrier_mid": [
                        r.barrier_ainsworth("robust_loss") for r in results
                    ],
                    "robust_min_acc": [r.min_robust_accuracy for r in results],
                    "clean_acc_at_robust_min": [
                        r.robust_extremes()["clean_acc_at_robust_min"] for r in results
                    ],
                    "robust_max_acc": [r.max("robust_acc") for r in results],
                    "clean_acc_at_robust_max": [
                        r.robust_extremes()["clean_acc_at_robust_max"] for r in results
                    ],
                }
            )
        row: dict[str, Any] = {
            "path": path_label(variant, kind),
            "kind": kind,
            "variant": variant,
            "n": n,
        }
        for k, v in vals.items():
            row[k], row[f"{k}_std"] = _ms(v)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The paper's table: accuracy Avg (arc-length weighted) and Min, plus loss barriers."""
    head = (
        "| Path | Avg acc (%) | Min acc (%) | Max test loss | Loss barrier | Error barrier (pts) |\n"
        "|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        n = r["n"]

        def cell(key: str, digits: int = 2, row: dict[str, Any] = r, n: int = n) -> str:
            if row.get(key) is None:
                return ""
            return _fmt(row[key], row[f"{key}_std"], n, digits)

        lines.append(
            f"| {r['path']} | {cell('avg_acc')} | {cell('min_acc')} | {cell('max_loss', 3)} "
            f"| {cell('loss_barrier', 3)} | {cell('error_barrier')} |"
        )
    return "\n".join(lines)


def robust_markdown_table(rows: list[dict[str, Any]]) -> str:
    """Robust metrics per path (Tatro et al. 2020, §5); empty when no path was attacked."""
    cols = [
        ("robust_avg_loss", "Avg robust loss", 3),
        ("robust_loss_barrier", "Robust loss barrier", 3),
        ("robust_loss_barrier_mid", "Robust barrier (½(L0+L1) form)", 3),
        ("robust_min_acc", "Min robust acc (%)", 2),
        ("clean_acc_at_robust_min", "Clean acc there (%)", 2),
        ("robust_max_acc", "Max robust acc (%)", 2),
        ("clean_acc_at_robust_max", "Clean acc there (%)", 2),
        ("endpoint_acc", "Endpoint clean acc (%)", 2),
        ("robust_endpoint_acc", "Endpoint robust acc (%)", 2),
    ]
    robust = [r for r in rows if r.get("robust_avg_loss") is not None]
    if not robust:
        return ""
    lines = [
        "| Path | " + " | ".join(c[1] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for r in robust:
        cells = [_fmt(r[k], r[f"{k}_std"], r["n"], d) for k, _, d in cols]
        lines.append(f"| {r['path']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pam_rows(aligns: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per PAM variant, over pairs: changed units and the objective at each stage.

    The objective is PAM's (mean loss over its ``objective_ts`` on the scoring subset):
    ``start``, after the first relaxed P-step (``p-relaxed``) and rounding (``p-step``),
    and after the last Ψ-step (``psi-step``); ``changed`` is the fraction of units whose
    assignment differs from PAM's start (identity or the correlation alignment).
    """
    rows = []
    for variant in ("pam-unaligned", "pam-aligned"):
        records = aligns.get(variant) or []
        if not records:
            continue
        row: dict[str, Any] = {"variant": variant, "path": variant_label(variant)}
        row["n"] = len(records)
        row["changed_units"], row["changed_units_std"] = _ms(
            [100 * r["changed_units"] for r in records]
        )
        for stage, pick in (("start", 0), ("p-relaxed", 0), ("p-step", 0), ("psi-step", -1)):
            vals = []
            for r in records:
                found = [e["objective"] for e in r["objective_log"] if e["stage"] == stage]
                if found:
                    vals.append(found[pick])
            if len(vals) == len(records):
                row[stage], row[f"{stage}_std"] = _ms(vals)
        groups = list(dict.fromkeys(g for r in records for g in r["changed_fraction"]))
        row["changed_by_group"] = {
            g: _ms([100 * r["changed_fraction"].get(g, 0.0) for r in records])[0] for g in groups
        }
        rows.append(row)
    return rows


def pam_markdown(rows: list[dict[str, Any]]) -> str:
    """The PAM table: changed units and the objective before and after each step."""
    if not rows:
        return ""
    cols = [
        ("changed_units", "Changed units (%)", 1),
        ("start", "Objective at start", 3),
        ("p-relaxed", "after relaxed P-step", 3),
        ("p-step", "after rounding", 3),
        ("psi-step", "after last Ψ-step", 3),
    ]
    lines = [
        "| PAM | " + " | ".join(c[1] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for r in rows:
        cells = [_fmt(r[k], r[f"{k}_std"], r["n"], d) if k in r else "" for k, _, d in cols]
        lines.append(f"| {r['path']} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        moved = [f"{g} {v:.0f}%" for g, v in r["changed_by_group"].items() if v > 0]
        lines.append(
            f"- {r['path']}, changed per group (mean over pairs): "
            + (", ".join(moved) if moved else "none")
        )
    return "\n".join(lines)


def paper_checks(
    rows: list[dict[str, Any]],
    pam: list[dict[str, Any]],
    robust_rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The paper's findings (Tatro et al. 2020, Tables 1–3), checked on this run's numbers.

    Each check is ``{"claim", "holds", "detail"}``; only checks whose rows exist are made.
    On the Bezier curves (the paper's table): Aligned Min ≥ Unaligned Min; PAM Unaligned
    better than Unaligned (Avg) with units changed; PAM Aligned ≈ Aligned (Avg within
    their summed std over pairs, or 0.5 points with one pair); and, on the robust rows
    (the robust track or a robust run), a lower robust loss barrier after alignment, on
    the line and the curve.
    """
    by = {(r.get("variant"), r.get("kind")): r for r in rows}
    out: list[dict[str, Any]] = []

    def pm(r: dict[str, Any], k: str) -> str:
        return _fmt(r[k], r[f"{k}_std"], r["n"])

    un, al = by.get(("unaligned", "bezier")), by.get(("correlation", "bezier"))
    if un and al:
        out.append(
            {
                "claim": "Aligned Min ≥ Unaligned Min (Bezier curve)",
                "holds": al["min_acc"] >= un["min_acc"],
                "detail": f"{pm(al, 'min_acc')} vs {pm(un, 'min_acc')} %",
            }
        )
    pu = by.get(("pam-unaligned", "bezier"))
    changed = {r["variant"]: r for r in pam}
    if un and pu:
        ch = changed.get("pam-unaligned")
        ch_txt = f"; {ch['changed_units']:.1f}% of units changed" if ch else ""
        out.append(
            {
                "claim": "PAM Unaligned better than Unaligned (Bezier Avg), units changed",
                "holds": pu["avg_acc"] > un["avg_acc"] and bool(ch and ch["changed_units"] > 0),
                "detail": f"{pm(pu, 'avg_acc')} vs {pm(un, 'avg_acc')} %{ch_txt}",
            }
        )
    pa = by.get(("pam-aligned", "bezier"))
    if al and pa:
        tol = (al["avg_acc_std"] + pa["avg_acc_std"]) if al["n"] > 1 else 0.5
        ch = changed.get("pam-aligned")
        ch_txt = f"; {ch['changed_units']:.1f}% of units changed" if ch else ""
        out.append(
            {
                "claim": "PAM Aligned ≈ Aligned (Bezier Avg)",
                "holds": abs(pa["avg_acc"] - al["avg_acc"]) <= tol,
                "detail": f"{pm(pa, 'avg_acc')} vs {pm(al, 'avg_acc')} % "
                f"(difference {pa['avg_acc'] - al['avg_acc']:+.2f}, tolerance {tol:.2f}){ch_txt}",
            }
        )
    rby = {(r.get("variant"), r.get("kind")): r for r in (robust_rows or rows)}
    for kind in ("line", "bezier"):
        ru, ra = rby.get(("unaligned", kind)), rby.get(("correlation", kind))
        if ru and ra and ru.get("robust_loss_barrier") is not None:
            out.append(
                {
                    "claim": f"Alignment lowers the robust loss barrier ({kind})",
                    "holds": ra["robust_loss_barrier"] < ru["robust_loss_barrier"],
                    "detail": f"{_fmt(ra['robust_loss_barrier'], ra['robust_loss_barrier_std'], ra['n'], 3)}"
                    f" vs {_fmt(ru['robust_loss_barrier'], ru['robust_loss_barrier_std'], ru['n'], 3)}",
                }
            )
    return out


def write_report(run_dir: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``report.md``, ``results.json``, ``results.csv`` and ``figures/`` for a run.

    Returns:
        The path of ``report.md``.
    """
    from neuralign.alignment.plot import plot_correlation
    from neuralign.paths import PlaneResult, plot_paths, plot_plane

    run = Path(run_dir)
    rd = RunDir(run)
    if not rd.config_file.exists():
        raise ConfigError(f"{run} is not a run folder (no config.toml); run `neuralign run` first")
    broken = rd.problems()
    if broken:
        more = f" (+{len(broken) - 2} more)" if len(broken) > 2 else ""
        raise ConfigError(
            f"{run}: {len(broken)} artefact(s) no longer match their stage markers "
            f"({'; '.join(broken[:2])}{more}); re-run `neuralign run` on this folder to "
            "recompute them (nothing written)"
        )
    info = collect(run)
    cfg = info["config"]
    if not info["paths"]:
        raise ConfigError(f"{run}: no evaluated paths yet; finish the run with `neuralign run`")
    rows = table_rows(info["paths"], info["endpoints"])
    figs = rd.figures_dir
    figures: dict[str, str] = {}
    figure_metrics = [("test_acc", "accuracy.png"), ("test_loss", "loss.png")]
    if all(r.robust_acc for res in info["paths"].values() for r in res):
        figure_metrics += [
            ("robust_acc", "robust_accuracy.png"),
            ("robust_loss", "robust_loss.png"),
        ]
    for metric, fname in figure_metrics:
        series = {path_label(v, k): res for (k, v), res in info["paths"].items()}
        p = plot_paths(
            series,
            figs / fname,
            metric=metric,
            title=f"{cfg.model.arch} on {cfg.data.dataset}: "
            f"{'robust ' if metric.startswith('robust') else ''}test "
            f"{'accuracy' if metric.endswith('_acc') else 'loss'} along the path",
        )
        figures[metric] = str(p.relative_to(run))
    corr = info["aligns"].get("correlation")
    if corr:
        groups = [r["group"] for r in corr[0]["groups"] if r["before"] is not None]
        before = {
            g: [next(r["before"] for r in a["groups"] if r["group"] == g) for a in corr]
            for g in groups
        }
        after = {
            g: [next(r["after"] for r in a["groups"] if r["group"] == g) for a in corr]
            for g in groups
        }
        p = plot_correlation(
            groups,
            before,
            after,
            figs / "correlation.png",
            title=f"{cfg.model.arch}: mean correlation of matched units",
        )
        figures["correlation"] = str(p.relative_to(run))
    for plane_file in rd.plane_files():
        plane = PlaneResult.load(plane_file)
        variant = plane_file.stem.rsplit("-", 1)[0]
        p = plot_plane(
            plane,
            figs / f"plane-{plane_file.stem}.png",
            title=f"{variant_label(variant)}: test loss on the plane of the curve",
        )
        figures[f"plane-{plane_file.stem}"] = str(p.relative_to(run))

    timings = rd.read_json(rd.timings_file) if rd.timings_file.exists() else {}
    prov_file = rd.provenance_file
    if provenance is not None:
        atomic_write_text(prov_file, json.dumps(provenance, indent=2) + "\n")
    prov = json.loads(prov_file.read_text()) if prov_file.exists() else {}
    any_path = next(iter(info["paths"].values()))[0]
    pam_table = pam_rows(info["aligns"])
    track = None
    if cfg.robust.pairs and (rd.robust_dir / "results.json").exists():
        track = json.loads((rd.robust_dir / "results.json").read_text())
    results = {
        "name": cfg.name,
        "config": cfg.to_dict(),
        "provenance": prov,
        "timings_s": timings,
        "bn_mode": any_path.bn_mode,
        "points": len(any_path.ts),
        "endpoints": {str(k): v for k, v in info["endpoints"].items()},
        "table": rows,
        "pam": pam_table,
        "figures": figures,
    }
    checks = paper_checks(rows, pam_table, track["table"] if track is not None else None)
    results["paper_checks"] = checks
    if track is not None:
        results["robust_track"] = {
            "report": "robust/report.md",
            "pairs": track["config"]["endpoints"]["seeds"],
            "timings_s": track.get("timings_s", {}),
            "endpoints": track.get("endpoints", {}),
            "table": track["table"],
        }
    atomic_write_text(rd.results_json, json.dumps(results, indent=2) + "\n")
    buf = io.StringIO()
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "path", k))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(rd.results_csv, buf.getvalue())

    n_pairs = len(cfg.pairs)
    md = [f"# {cfg.name}: {cfg.model.arch} on {cfg.data.dataset}", ""]
    md.append(
        f"Test accuracy along paths between endpoints trained from different seeds "
        f"({n_pairs} pair{'s' if n_pairs != 1 else ''}: "
        + ", ".join(f"{a}–{b}" for a, b in cfg.pairs)
        + f"). Avg = arc-length weighted mean over {len(any_path.ts)} points of t; "
        "Min = worst point; barriers = max over t of L(t) − [(1−t)L(0) + tL(1)]; "
        f"± = std over pairs. BatchNorm statistics recomputed at every t on "
        f"`{any_path.bn_mode}` data."
    )
    md += ["", markdown_table(rows), ""]
    robust_table = robust_markdown_table(rows)
    if robust_table:
        attack = any_path.metadata.get("attack", {})
        md.append("## Robustness (PGD)\n")
        md.append(
            f"L∞ PGD, ε = {attack.get('eps', float('nan')):.4g}, α = "
            f"{attack.get('alpha', float('nan')):.4g}, {attack.get('steps')} steps, crafted "
            f"against φ(t) at every t; BatchNorm recomputed on `{any_path.bn_source}` inputs. "
            "Robust loss barrier = max over t of L_adv(t) − [(1−t)L_adv(0) + tL_adv(1)] "
            "(Zhao et al. 2020); Avg = arc-length weighted mean."
        )
        md += ["", robust_table, ""]
    if pam_table:
        md.append("## PAM: the permutation it found\n")
        md.append(
            "Objective = PAM's loss (mean over its t values on the scoring subset of the "
            "training set); changed = units whose assignment differs from PAM's start "
            "(identity for PAM Unaligned, the correlation alignment for PAM Aligned)."
        )
        md += ["", pam_markdown(pam_table), ""]
    if track is not None:
        tcfg = track["config"]
        seeds = tcfg["endpoints"]["seeds"]
        tpairs = [(seeds[i], seeds[i + 1]) for i in range(0, len(seeds) - 1, 2)]
        attack = tcfg["robust"]
        md.append("## Robust track (adversarially trained endpoints, robust curves)\n")
        md.append(
            f"Pair{'s' if len(tpairs) != 1 else ''} "
            + ", ".join(f"{a}–{b}" for a, b in tpairs)
            + f" trained adversarially (L∞ PGD ε = {attack['eps']:.4g}, α = "
            f"{attack['alpha']:.4g}, {attack['steps']} steps, model in "
            f"`{attack['train_mode']}` mode; {tcfg['endpoints']['epochs']} epochs, "
            f"`{attack['schedule'] or tcfg['endpoints']['schedule']}` schedule), robust curves "
            f"({tcfg['curves']['epochs']} epochs), {tcfg['eval']['points']} points per path, "
            f"BatchNorm recomputed on `{attack['bn_source']}` training inputs. "
            "Its own report: [robust/report.md](robust/report.md)."
        )
        md += ["", markdown_table(track["table"]), ""]
        rt = robust_markdown_table(track["table"])
        if rt:
            md += [rt, ""]
        for key, rel in track.get("figures", {}).items():
            if key.startswith("robust"):
                md.append(f"![robust track {key}](robust/{rel})\n")
    if checks:
        md.append("## The paper's findings, checked on this run\n")
        md.append("| Finding (Tatro et al. 2020) | Here | Holds |\n|---|---|---|")
        for c in checks:
            md.append(f"| {c['claim']} | {c['detail']} | {'yes' if c['holds'] else '**no**'} |")
        md.append("")
    md.append("## Figures\n")
    for key, rel in figures.items():
        md.append(f"![{key}]({rel})\n")
    if corr:
        md.append("## Alignment (correlation), mean matched correlation per group\n")
        md.append("| Group | Units | Before | After |\n|---|---|---|---|")
        for r in corr[0]["groups"]:
            if r["before"] is None:
                continue
            md.append(f"| {r['group']} | {r['size']} | {r['before']:.3f} | {r['after']:.3f} |")
        md.append("")
    md.append("## Provenance\n")
    for k, v in prov.items():
        md.append(f"- {k}: {v}")
    if timings:
        md.append(
            "- wall time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        )
        md.append(f"- total wall time: {sum(timings.values()):.1f} s")
    md += ["", "## Config", "", "```toml", cfg.to_toml().rstrip(), "```", ""]
    path = rd.report_file
    atomic_write_text(path, "\n".join(md))
    return path
