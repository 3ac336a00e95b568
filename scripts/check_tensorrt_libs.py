#!/usr/bin/env python3
"""Do the shared libraries of onnxruntime-gpu's TensorRT and CUDA providers resolve here?

    python3 scripts/check_tensorrt_libs.py                # this environment (in the GPU image: as the server sees it)
    python3 scripts/check_tensorrt_libs.py --venv DIR     # a throwaway venv with the GPU image's packages first

For each provider library in the installed onnxruntime package, `ldd` lists what the
dynamic loader finds for each library it needs; every one must resolve except the
driver's `libcuda.so.1`, which the NVIDIA container runtime mounts when a container
starts on a GPU. Exit 0 when all resolve, 1 when one does not, 2 on a usage error.

`--venv DIR` makes the environment outside Docker: a new virtual environment with
the packages of pyproject.toml's `gpu` and `tensorrt` extras, plus the CUDA and cuDNN
runtime wheels that stand in for the CUDA base image's libraries. It downloads
gigabytes (not for CI). Since no loader configuration points into that venv, the
wheels' library directories are searched (`--wheel-dirs`, on with `--venv`); in the
image the Dockerfile registers them with the loader instead, so the check runs
without it there.

Standard library only: the image has no test tools.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("libonnxruntime_providers_tensorrt.so", "libonnxruntime_providers_cuda.so")
# Mounted into the container by the NVIDIA runtime from the host's driver; never in an image.
DRIVER_LIBRARIES = ("libcuda.so.1",)
# What the CUDA base image (nvidia/cuda:13.0.0-cudnn-runtime) carries, as PyPI wheels:
# the CUDA runtime, cuBLAS, cuRAND, cuFFT, NVRTC and cuDNN 9 for CUDA 13.
CUDA_RUNTIME_WHEELS = ("onnxruntime-gpu[cuda,cudnn]", "nvidia-cublas~=13.0")

# The part of the environment this script reports on, as JSON (for the closing note of a run).
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, pathlib
ort = pathlib.Path(importlib.util.find_spec("onnxruntime").origin).parent
site = ort.parent
dirs = [str(p) for p in sorted(site.glob("nvidia/*/lib"))]
trt = importlib.util.find_spec("tensorrt_libs")
if trt is not None:
    dirs.insert(0, str(pathlib.Path(trt.origin).parent))
versions = {}
for name in ("onnxruntime-gpu", "tensorrt-cu13-libs", "tensorrt-cu12-libs"):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps({"capi": str(ort / "capi"), "wheel_dirs": dirs, "versions": versions}))
"""


@dataclass(frozen=True)
class Needed:
    name: str
    path: str | None  # None: not found

    @property
    def ok(self) -> bool:
        return self.path is not None or self.name in DRIVER_LIBRARIES


def parse_ldd(output: str) -> list[Needed]:
    """`ldd` lines as (library, where it resolved or None)."""
    needed = []
    for line in output.splitlines():
        match = re.match(r"^\s*(\S+)\s+=>\s+(not found|\S+)", line)
        if match:
            name, where = match.groups()
            needed.append(Needed(name, None if where == "not found" else where))
    return needed


def ldd(library: Path, library_path: list[str]) -> list[Needed]:
    env = dict(os.environ)
    if library_path:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*library_path, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    result = subprocess.run(["ldd", str(library)], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0 and not result.stdout:
        raise RuntimeError(f"ldd {library} failed: {result.stderr.strip()}")
    return parse_ldd(result.stdout)


def extra_requirements(*extras: str) -> list[str]:
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return [requirement for extra in extras for requirement in optional[extra]]


def make_venv(directory: Path) -> Path:
    """A new virtual environment with the GPU image's packages; its python.

    The TensorRT wheels go in last and on their own: when they cannot be installed,
    the check still runs and shows what is then missing.
    """
    venv.create(directory, with_pip=True, clear=True)
    python = directory / "bin" / "python"
    for packages, required in (
        ([*extra_requirements("gpu"), *CUDA_RUNTIME_WHEELS], True),
        (extra_requirements("tensorrt"), False),
    ):
        print(f"installing into {directory}: {' '.join(packages)}", flush=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *packages], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            print(f"pip install failed:\n{result.stderr.strip()[-3000:]}", flush=True)
            if required:
                raise SystemExit(1)
    return python


def check(python: Path, *, wheel_dirs: bool) -> int:
    probe = json.loads(subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=True).stdout)
    print("packages:", ", ".join(f"{name}=={version}" for name, version in probe["versions"].items()))
    library_path = probe["wheel_dirs"] if wheel_dirs else []
    if library_path:
        print("searching the wheels' library directories too:", *library_path, sep="\n  ")
    failures = 0
    for provider in PROVIDERS:
        library = Path(probe["capi"]) / provider
        if not library.exists():
            print(f"{provider}: not in this onnxruntime (is it onnxruntime-gpu?)")
            failures += 1
            continue
        print(f"{provider}:")
        for needed in ldd(library, library_path):
            where = needed.path or ("not found (the driver's: mounted at run time)" if needed.ok else "NOT FOUND")
            print(f"  {needed.name:28} {where}")
            failures += not needed.ok
    print("result:", "every library resolves" if failures == 0 else f"{failures} libraries do not resolve")
    return 0 if failures == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="build a throwaway venv here first (downloads gigabytes)")
    parser.add_argument(
        "--wheel-dirs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also search the library directories of the tensorrt_libs and nvidia-* wheels (default: with --venv)",
    )
    args = parser.parse_args(argv)
    python = make_venv(args.venv) if args.venv else Path(sys.executable)
    return check(python, wheel_dirs=args.wheel_dirs if args.wheel_dirs is not None else args.venv is not None)


if __name__ == "__main__":
    sys.exit(main())
