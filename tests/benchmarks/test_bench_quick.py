"""`python -m benchmarks --quick` (what `make bench-quick` runs) end to end on a tiny exported model:
it runs and its numbers are sane.

This is the CI smoke test of the benchmark suite. It checks that every
configuration ran and that the numbers hang together, never how fast anything is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import readme, report
from benchmarks.suite import BenchReport

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"slipstream", "slipstream-batch1", "slipstream-no-buckets", "pipeline"}


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, tiny_model_factory
) -> tuple[Path, BenchReport]:
    output = tmp_path_factory.mktemp("bench") / "quick"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--no-progress",
        "--artifact",
        str(tiny_artifact),
        "--model-dir",
        str(tiny_model_factory("bert", 3)),
        "--output",
        str(output),
    ]
    # From the checkout's root, as `make bench-quick` runs it: benchmarks/ is not installed.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output, report.load(output)


def test_every_configuration_runs_without_errors(quick_run: tuple[Path, BenchReport]) -> None:
    _, result = quick_run
    assert {run.config.name for run in result.runs} == CONFIGS
    for run in result.runs:
        assert run.error is None, run.error
        assert run.points, run.config.name
        for record in run.points:
            r = record.result
            assert r.n_ok > 0 and r.n_errors == 0 and r.n_timeouts == 0, (run.config.name, r)
            assert r.achieved_rps > 0 and r.sequences_per_s >= r.achieved_rps and r.tokens_per_s > r.sequences_per_s
            lat = r.latency
            assert 0 < lat.p50_s <= lat.p90_s <= lat.p99_s <= lat.p999_s <= lat.max_s  # type: ignore[operator]
            assert sum(lat.histogram) == lat.count == r.n_ok
            assert 0 <= r.client_cpu_s < 2 * r.wall_s


def test_server_metrics_show_batching_and_padding(quick_run: tuple[Path, BenchReport]) -> None:
    _, result = quick_run
    runs = {run.config.name: run for run in result.runs}
    for name in ("slipstream", "slipstream-batch1", "slipstream-no-buckets"):
        for record in runs[name].points:
            assert record.server is not None and record.server.batches > 0
            assert 0 < record.server.padding_efficiency <= 1  # type: ignore[operator]
            assert record.server.items >= record.result.n_ok
    assert all(r.server.mean_batch_size == 1 for r in runs["slipstream-batch1"].points)  # type: ignore[union-attr]
    assert all(r.server is None for r in runs["pipeline"].points)

    # One client means batches of one, and on a CPU a batch is padded only to its longest item:
    # no padding at all, with or without buckets.
    def at_one_client(name: str) -> float:
        record = next(r for r in runs[name].points if r.result.point.concurrency == 1)
        assert record.server is not None and record.server.mean_batch_size == 1
        return record.server.padding_efficiency  # type: ignore[return-value]

    assert at_one_client("slipstream-no-buckets") == 1.0
    assert at_one_client("slipstream") == 1.0


def test_workloads_and_summary_are_recorded(quick_run: tuple[Path, BenchReport]) -> None:
    _, result = quick_run
    assert [w.name for w in result.workloads] == ["single", "rerank"]
    single, rerank = result.workloads
    assert sum(single.token_histogram.values()) == single.sequences == single.requests
    assert rerank.sequences >= 10 * rerank.requests
    rerank_points = [r for r in result.runs[0].points if r.workload == "rerank"]
    assert rerank_points and rerank_points[0].result.sequences_per_s >= 10 * rerank_points[0].result.achieved_rps
    summary = result.summary
    assert summary is not None and summary.slo_p99_ms == 100
    assert set(summary.ratios) >= {"c32_vs_pipeline", "c32_vs_slipstream-batch1", "c32_vs_slipstream-no-buckets"}
    idle = summary.targets["idle_added_latency_p50_ms"]
    assert idle["end_to_end_p50_ms"] > idle["engine_p50_ms"] > 0
    assert result.environment.machine.logical_cpus >= 1 and "onnxruntime" in result.environment.versions


def test_the_report_has_tables_plots_and_renders_the_readme_section(
    quick_run: tuple[Path, BenchReport], tmp_path: Path
) -> None:
    output, _ = quick_run
    markdown = (output / report.MARKDOWN_FILE).read_text()
    assert "## Headline: throughput at p99 <= 100 ms" in markdown
    for plot in report.PLOTS.values():
        assert (output / plot).stat().st_size > 1000, plot
        assert f"]({plot})" in markdown
    docs = tmp_path / "docs" / "performance.md"
    section = readme.write(output, docs).read_text()
    assert "requests/s of single texts at p99 <= 100 ms" in section
    assert "GPU: no GPU results" in section
    # The plot link is relative to the generated page and points at the run's own plot.
    link = section.split("![latency against throughput](")[1].split(")")[0]
    assert (docs.parent / link).resolve() == (output / report.PLOTS["latency"]).resolve()


def test_rendering_into_a_readme_replaces_only_the_marked_section(
    quick_run: tuple[Path, BenchReport], tmp_path: Path
) -> None:
    output, _ = quick_run
    page = tmp_path / "README.md"
    page.write_text(
        f"# Intro\n\nkept\n\n{readme.BEGIN_MARKER}\nold numbers\n{readme.END_MARKER}\n\n## After\n\nalso kept\n"
    )
    text = readme.write(output, page).read_text()
    assert text.startswith("# Intro\n\nkept\n")
    assert text.rstrip().endswith("## After\n\nalso kept")
    assert "old numbers" not in text
    assert "## Performance" in text and "requests/s of single texts at p99 <= 100 ms" in text
    # Rendering twice gives the same page: the markers survive.
    assert readme.write(output, page).read_text() == text


def test_every_variants_fidelity_and_the_served_batch_invariance_are_reported(
    quick_run: tuple[Path, BenchReport],
) -> None:
    output, result = quick_run
    facts = {fact.name: fact for fact in result.model.variant_facts}
    assert set(facts) == {"fp32", "int8"}
    assert facts["fp32"].fidelity is None and facts["int8"].fidelity is not None
    assert facts["int8"].execution == "per_item"
    main = next(run for run in result.runs if run.config.name == "slipstream")
    # Pairs scored while other clients kept the server busy, against the same pairs alone: bitwise.
    assert main.served_invariance_pairs > 10 and main.served_invariance_max_abs_diff == 0.0
    assert "## Variants: fidelity, batch invariance, speed" in (output / report.MARKDOWN_FILE).read_text()
