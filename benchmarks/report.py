"""Write a run's report: raw JSON, a Markdown summary, PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from benchmarks.suite import BenchReport, ConfigRun, PointRecord
from slipstream.json_files import write_json

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PLOTS = {
    "latency": "latency_vs_throughput.png",
    "batches": "batch_sizes.png",
    "padding": "padding.png",
    "lengths": "token_lengths.png",
}


def load(result_dir: Path) -> BenchReport:
    return msgspec.json.decode((result_dir / RESULTS_FILE).read_bytes(), type=BenchReport)


def write(report: BenchReport, result_dir: Path) -> list[Path]:
    result_dir.mkdir(parents=True, exist_ok=True)
    written = [result_dir / RESULTS_FILE, result_dir / MARKDOWN_FILE]
    write_json(written[0], report)
    written.extend(write_plots(report, result_dir))
    written[1].write_text(markdown(report, plots=[p.name for p in written[2:]]))
    return written


# -- formatting -----------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.1f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _target_name(record: PointRecord) -> str:
    point = record.result.point
    if point.mode == "open":
        return f"open {point.rate:,.1f}/s"
    if point.mode == "closed":
        return f"closed c={point.concurrency}"
    return f"idle x{point.requests}"


def header_lines(report: BenchReport) -> list[str]:
    env, model, profile = report.environment, report.model, report.profile
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    commit = (env.git_commit or "unknown") + (" (uncommitted changes)" if env.git_dirty else "")
    return [
        f"- Machine: {env.machine.cpu}, {env.machine.logical_cpus} logical CPUs, "
        f"{_num(env.machine.memory_gib)} GiB, {env.machine.os}; GPU: {env.machine.gpu or 'none'}",
        f"- Software: Python {env.machine.python}; {versions}; commit {commit}",
        f"- Model: `{model.source}` ({model.architecture}, {model.num_labels} label(s), "
        f"max {model.max_sequence_length} "
        f"tokens), artifact `{model.artifact}` with variants {', '.join(model.variants)}",
        f"- Profile `{profile.name}`: {profile.warmup_s:g} s warm-up + {profile.duration_s:g} s per point; "
        f"latency objective p99 <= {profile.slo_p99_ms:g} ms; load generator and servers on the same machine",
        f"- Run: {report.started_at} to {report.finished_at} ({report.duration_s:.0f} s)",
    ]


def ratio_table(report: BenchReport) -> list[str]:
    """Slipstream / baseline, at the compare concurrency and at the latency objective."""
    s = report.summary
    assert s is not None
    c = report.profile.compare_concurrency
    by_name = {x.config: x for x in s.configs}
    main = by_name.get("slipstream")
    rows = []
    for name in ("pipeline", "slipstream-batch1", "slipstream-no-buckets"):
        other = by_name.get(name)
        if not main or not other:
            continue
        at_c = s.ratios.get(f"c{c}_vs_{name}")
        if not other.throughput_at_slo_rps:
            at_slo = f"baseline never met it (Slipstream: {_num(main.throughput_at_slo_rps)} req/s)"
        else:
            at_slo = _ratio(s.ratios.get(f"at_slo_vs_{name}"))
        rows.append([other.label, _ratio(at_c), at_slo])
    return _table(["baseline", f"Slipstream / baseline at c={c}", f"at p99 <= {s.slo_p99_ms:g} ms"], rows)


def variant_table(report: BenchReport) -> list[str]:
    """Each variant's fidelity to fp32 and batch invariance next to its served rerank speed."""
    facts = report.model.variant_facts
    if not facts:
        return []
    s = report.summary
    served = next((run for run in report.runs if run.config.name == "slipstream"), None)
    served_variant = str((served.info or {}).get("groups", {}).get("primary", {}).get("variant", "")) if served else ""
    rerank_cs = sorted({int(key.split("_")[1][1:]) for key in (s.ratios if s else {}) if key.startswith("rerank_c")})
    rows = []
    for fact in facts:
        fidelity = fact.fidelity
        cpu = next((i for i in fact.invariance if "cpu" in i.devices), None)
        invariance = "-" if cpu is None else f"{cpu.guarantee}, export measured {_num(cpu.measured_max_abs_diff, 3)}"
        if served and fact.name == served_variant and served.served_invariance_max_abs_diff is not None:
            invariance += (
                f"; served: {served.served_invariance_max_abs_diff:.3g} over {served.served_invariance_pairs} pairs"
            )
        speed = []
        for c in rerank_cs:
            ratio = (s.ratios if s else {}).get(f"rerank_c{c}_vs_slipstream-fp32")
            speed.append(_ratio(ratio) if fact.name == served_variant else ("1.00x" if fact.name == "fp32" else "–"))
        rows.append(
            [
                fact.name + (" (served by default)" if fact.name == served_variant else ""),
                fact.execution,
                "reference" if fidelity is None else f"{fidelity.top1_agreement:.3f}",
                "reference"
                if fidelity is None
                else ("–" if fidelity.spearman_per_query is None else f"{fidelity.spearman_per_query:.4f}"),
                "opt-in" if fact.opt_in else "yes",
                invariance,
                *speed,
            ]
        )
    header = [
        "variant",
        "runs",
        "top-1 vs fp32",
        "Spearman vs fp32",
        "meets the fidelity bars",
        "batch invariance, max abs(co-batched - alone)",
        *(f"rerank pairs/s vs fp32, c={c}" for c in rerank_cs),
    ]
    return _table(header, rows)


def markdown(report: BenchReport, plots: list[str]) -> str:
    s = report.summary
    lines = [f"# Slipstream benchmark: {report.started_at[:10]}, {report.environment.machine.name}", ""]
    lines += [*header_lines(report), ""]
    if s:
        lines += [f"## Headline: throughput at p99 <= {s.slo_p99_ms:g} ms", ""]
        lines += _table(
            [
                "configuration",
                f"req/s at p99<={s.slo_p99_ms:g}ms",
                "peak req/s",
                f"req/s at c={report.profile.compare_concurrency}",
                "idle p50 ms",
                f"mean batch at c={report.profile.compare_concurrency}",
                "padding efficiency",
                "rerank pairs/s",
            ],
            [
                [
                    c.label,
                    _num(c.throughput_at_slo_rps),
                    _num(c.peak_rps),
                    _num(c.rps_at_compare_concurrency),
                    _num(c.idle_p50_ms, 2),
                    _num(c.mean_batch_size_at_compare, 2),
                    _num(c.padding_efficiency, 3),
                    _num(c.rerank_peak_pairs_per_s),
                ]
                for c in s.configs
            ],
        )
        if s.ratios:
            lines += ["Slipstream against the baselines, same run:", "", *ratio_table(report), ""]
        if report.model.variant_facts:
            lines += ["## Variants: fidelity, batch invariance, speed", "", *variant_table(report), ""]
        if s.targets:
            lines += ["## Service targets", ""]
            lines += _table(
                ["target", "measured", "goal", "met"],
                [
                    [name, _num(t.get("value"), 3), _num(t.get("target"), 2), "yes" if t.get("met") else "no"]
                    for name, t in s.targets.items()
                ],
            )
    if report.offline:
        o = report.offline
        rates = ", ".join(f"batch {b}: {_num(v)}" for b, v in o.sequences_per_s_by_batch_size.items())
        lines += [
            "## Offline engine (the ceiling)",
            "",
            f"The served engine ({o.variant} on {o.device}, {', '.join(o.providers)}) run directly on the first "
            f"{o.texts} single texts in bucketed batches, {o.parallel_runs} batch(es) in flight at once as it "
            f"runs them, median of {o.rounds} pass(es): {rates} sequences/s. "
            f"Padding efficiency of its buckets on these texts: {o.padding_efficiency:.3f}.",
            "",
        ]
    lines += ["## Workloads (tokens per sequence, special tokens included)", ""]
    ranges = list(report.workloads[0].token_histogram)
    lines += _table(
        ["workload", "fingerprint", "requests", "sequences", "mean", "p50", "p90", "p99", "max", *ranges],
        [
            [
                w.name,
                f"`{w.fingerprint}`",
                str(w.requests),
                str(w.sequences),
                _num(w.tokens_mean),
                _num(w.tokens_p50, 0),
                _num(w.tokens_p90, 0),
                _num(w.tokens_p99, 0),
                str(w.tokens_max),
                *(str(w.token_histogram[r]) for r in ranges),
            ]
            for w in report.workloads
        ],
    )
    lines += ["## Every point", ""]
    for run in report.runs:
        lines += [
            f"### {run.config.label}",
            "",
            f"{run.config.description}. Start-up (load + warm-up): {_num(run.startup_s)} s.",
            "",
        ]
        if run.error:
            lines += [f"**Failed:** `{run.error}`", ""]
        if run.points:
            lines += _table(
                [
                    "workload",
                    "load",
                    "offered req/s",
                    "req/s",
                    "seq/s",
                    "tokens/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "429",
                    "errors",
                    "mean batch",
                    "padding eff.",
                    "client CPU",
                ],
                [_point_row(record) for record in run.points],
            )
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    lines += [
        "## Method",
        "",
        "Open loop: Poisson arrivals at a fixed rate, each request's latency measured from its intended send "
        "time (no coordinated omission). Closed loop: c clients, each sending its next request when the last "
        "returns. Rates are fractions of the configuration's best closed-loop throughput. Throughput counts "
        "successful responses completed inside the measurement window. Batch sizes and padding come from the "
        "server's /metrics, scraped before and after every point. Client CPU is the load generator's CPU time "
        "over the point's wall time (it shares the machine with the server).",
        "",
    ]
    return "\n".join(lines)


def _point_row(record: PointRecord) -> list[str]:
    r, server = record.result, record.server
    latency = r.latency
    return [
        record.workload,
        _target_name(record),
        _num(r.offered_rps),
        _num(r.achieved_rps),
        _num(r.sequences_per_s),
        _num(r.tokens_per_s, 0),
        _ms(latency.p50_s),
        _ms(latency.p90_s),
        _ms(latency.p99_s),
        _ms(latency.p999_s),
        str(r.n_rejected),
        str(r.n_errors + r.n_timeouts),
        _num(server.mean_batch_size, 2) if server else "–",
        _num(server.padding_efficiency, 3) if server else "–",
        f"{r.client_cpu_s / r.wall_s:.0%}" if r.wall_s else "–",
    ]


# -- plots ----------------------------------------------------------------------


def write_plots(report: BenchReport, result_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, draw in (
        ("latency", _plot_latency),
        ("batches", _plot_batches),
        ("padding", _plot_padding),
        ("lengths", _plot_lengths),
    ):
        figure = draw(report, plt)
        if figure is None:
            continue
        path = result_dir / PLOTS[key]
        figure.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _single_points(run: ConfigRun, mode: str) -> list[PointRecord]:
    points = [r for r in run.points if r.workload == "single" and r.result.point.mode == mode and r.result.n_ok]
    # Open loop in order of load; closed loop in order of clients (throughput can dip past saturation).
    return sorted(points, key=lambda r: r.result.point.rate or 0 if mode == "open" else r.result.point.concurrency or 0)


def _plot_latency(report: BenchReport, plt: Any) -> Any:
    """Open loop against the offered rate (past saturation the achieved rate falls behind it: hollow
    markers); closed loop against the achieved rate, each point labelled with its client count."""
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, mode in ((axes[0], "open"), (axes[1], "closed")):
        for i, run in enumerate(report.runs):
            points = _single_points(run, mode)
            if not points:
                continue
            color = f"C{i}"
            x = [r.result.offered_rps if mode == "open" else r.result.achieved_rps for r in points]
            p99 = [(r.result.latency.p99_s or 0.0) * 1000 for r in points]
            ax.plot(x, p99, "-", color=color, label=f"{run.config.label} p99")
            ax.plot(
                x,
                [(r.result.latency.p50_s or 0.0) * 1000 for r in points],
                "--",
                color=color,
                alpha=0.7,
                label=f"{run.config.label} p50",
            )
            for xi, yi, r in zip(x, p99, points, strict=True):
                saturated = mode == "open" and r.result.achieved_rps < 0.95 * r.result.offered_rps
                ax.plot([xi], [yi], "o", color=color, markerfacecolor="white" if saturated else color)
                if mode == "closed":
                    ax.annotate(
                        f"c={r.result.point.concurrency}",
                        (xi, yi),
                        fontsize=7,
                        color=color,
                        textcoords="offset points",
                        xytext=(3, 3),
                    )
        ax.axhline(
            report.profile.slo_p99_ms,
            color="grey",
            linestyle=":",
            label=f"objective p99 {report.profile.slo_p99_ms:g} ms",
        )
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_xlabel("offered load (requests/s, single texts)")
    axes[0].set_title("Open loop (Poisson arrivals); hollow: achieved < 95% of offered")
    axes[1].set_xlabel("achieved throughput (requests/s, single texts)")
    axes[1].set_title("Closed loop (c clients)")
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Latency against load, {report.environment.machine.name}")
    return figure


def _compare_point(run: ConfigRun, concurrency: int) -> PointRecord | None:
    return next(
        (r for r in run.points if r.workload == "single" and r.result.point.concurrency == concurrency and r.server),
        None,
    )


def _plot_batches(report: BenchReport, plt: Any) -> Any:
    c = report.profile.compare_concurrency
    records = [(run, _compare_point(run, c)) for run in report.runs]
    records = [(run, r) for run, r in records if r is not None and r.server and r.server.batches]
    if not records:
        return None
    figure, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(records)
    for i, (run, record) in enumerate(records):
        hist = record.server.batch_size  # type: ignore[union-attr]
        labels = [f"<={b:g}" for b in hist.upper_bounds] + ["more"]
        share = np.array(hist.counts) / max(hist.count, 1)
        ax.bar(np.arange(len(labels)) + i * width, share, width, label=f"{run.config.label} (mean {hist.mean:.1f})")
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_xlabel("items per engine batch")
    ax.set_ylabel("share of batches")
    ax.set_title(f"Batch sizes at {c} concurrent clients (server /metrics)")
    ax.legend(fontsize=8)
    return figure


def _plot_padding(report: BenchReport, plt: Any) -> Any:
    c = report.profile.compare_concurrency
    records = [(run, _compare_point(run, c)) for run in report.runs]
    records = [(run, r) for run, r in records if r is not None and r.server and r.server.batches]
    if not records:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [run.config.label for run, _ in records]
    efficiency = [r.server.padding_efficiency or 0 for _, r in records]  # type: ignore[union-attr]
    axes[0].barh(names, efficiency, color=[f"C{i}" for i in range(len(names))])
    axes[0].set_xlim(0, 1)
    axes[0].set_xlabel("real tokens / padded tokens")
    axes[0].set_title(f"Padding efficiency at c={c}")
    width = 0.8 / len(records)
    for i, (run, record) in enumerate(records):
        hist = record.server.padded_tokens_per_batch  # type: ignore[union-attr]
        labels = [f"<={b:g}" for b in hist.upper_bounds] + ["more"]
        axes[1].bar(
            np.arange(len(labels)) + i * width,
            np.array(hist.counts) / max(hist.count, 1),
            width,
            label=run.config.label,
        )
    axes[1].set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=45)
    axes[1].set_xlabel("padded tokens per batch (items x bucket length)")
    axes[1].set_ylabel("share of batches")
    axes[1].set_title("Padded tokens per batch")
    axes[1].legend(fontsize=8)
    return figure


def _plot_lengths(report: BenchReport, plt: Any) -> Any:
    figure, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(report.workloads), 1)
    for i, workload in enumerate(report.workloads):
        counts = np.array(list(workload.token_histogram.values()), dtype=float)
        ax.bar(
            np.arange(len(counts)) + i * width,
            counts / counts.sum(),
            width,
            label=f"{workload.name} (mean {workload.tokens_mean:.0f}, p99 {workload.tokens_p99:.0f})",
        )
    ax.set_xticks(np.arange(len(counts)) + 0.4 - width / 2, list(report.workloads[0].token_histogram))
    ax.set_xlabel("tokens per sequence")
    ax.set_ylabel("share of sequences")
    ax.set_title("Workload length histograms")
    ax.legend(fontsize=8)
    return figure
