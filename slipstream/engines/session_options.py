"""ONNX Runtime SessionOptions for each device, built from EngineSettings.

Returned alongside a flat {name: value} dict of what was set, which the
engine's description (/info, start-up log) shows.
"""

from __future__ import annotations

import onnxruntime as ort

from slipstream.engines.platform import physical_cores
from slipstream.engines.settings import CpuSettings, EngineSettings

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def cpu_threading(cpu: CpuSettings) -> tuple[int, int]:
    """(threads inside one run, runs at once) on a CPU, automatic values resolved."""
    cores = physical_cores()
    threads = cpu.intra_op_threads or cores
    runs = cpu.parallel_runs or max(1, cores // threads)
    return threads, runs


def wide_threads(cpu: CpuSettings) -> int:
    """Threads of the wide CPU session; 0 when there is none (off, or narrow runs already have every core)."""
    threads, _ = cpu_threading(cpu)
    cores = physical_cores()
    return cores if cpu.wide_from_length and cores > threads else 0


def build_session_options(
    settings: EngineSettings, device: str, intra_op_threads: int | None = None
) -> tuple[ort.SessionOptions, dict[str, str]]:
    """Options of a device's sessions; `intra_op_threads` overrides the CPU thread count (the wide session)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[settings.graph_optimization_level]
    # Nodes run in order: parallelism is inside each operator (GEMMs, attention
    # heads) and, on a CPU, across concurrent runs (`cpu.parallel_runs`).
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    # Warnings only: ORT's info log prints a line per node placement.
    options.log_severity_level = 2
    described = {
        "graph_optimization_level": settings.graph_optimization_level,
        "execution_mode": "sequential",
    }
    if device == "cpu":
        cpu = settings.cpu
        threads, runs = cpu_threading(cpu)
        threads = intra_op_threads or threads
        # With one thread, a run executes on its caller's thread: no pool to wake.
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = cpu.enable_memory_arena
        options.enable_mem_pattern = cpu.enable_memory_pattern
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if cpu.allow_spinning else "0")
        described |= {
            "intra_op_threads": str(threads),
            "parallel_runs": str(runs),
            "allow_spinning": str(cpu.allow_spinning).lower(),
            "cpu_memory_arena": str(cpu.enable_memory_arena).lower(),
            "memory_pattern": str(cpu.enable_memory_pattern).lower(),
        }
    else:
        # On a GPU the host threads only launch kernels: one is enough, and
        # spinning would burn a core the tokenizer wants.
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        described["intra_op_threads"] = "1"
        # One batch at a time: device buffers are reused per shape.
        described["parallel_runs"] = "1"
    return options, described
