"""The report header: which machine, which software, which commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import msgspec

PACKAGES = (
    "slipstream",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "numpy",
    "litestar",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "torch",
    "transformers",
    "optimum-onnx",
    "ray",
)


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # short, for the results directory: cpu model and core count
    cpu: str
    logical_cpus: int
    memory_gib: float | None
    os: str
    python: str
    gpu: str | None


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    versions: dict[str, str]
    git_commit: str | None
    git_dirty: bool | None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) if out.returncode == 0 and names else None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_name(cpu: str, cpus: int, gpu: str | None) -> str:
    base = gpu.split(",")[0] if gpu else cpu
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    return f"{slug}-{cpus}cpu"


def collect() -> Environment:
    cpu, cpus, gpu = _cpu_model(), os.cpu_count() or 1, _gpu()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    status = _git("status", "--porcelain", "--untracked-files=no")
    return Environment(
        machine=Machine(
            name=machine_name(cpu, cpus, gpu),
            cpu=cpu,
            logical_cpus=cpus,
            memory_gib=_memory_gib(),
            os=f"{platform.system()} {platform.release()}",
            python=platform.python_version(),
            gpu=gpu,
        ),
        versions=versions,
        git_commit=_git("rev-parse", "--short", "HEAD"),
        git_dirty=bool(status) if status is not None else None,
    )
