"""scripts/check_tensorrt_libs.py, the check the GPU image's build runs: its parts, offline.

Its real run (a throwaway venv with onnxruntime-gpu and the TensorRT wheels) downloads
gigabytes and is not for CI; docs/deploy.md#tensorrt-in-the-gpu-image has its result.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from slipstream.engines.platform import _TENSORRT_LIBRARIES

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_tensorrt_libs.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_tensorrt_libs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd4a1f2000)
\tlibcublas.so.13 => /opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13 (0x00007f0d)
\tlibnvinfer.so.10 => not found
\tlibcuda.so.1 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c)
"""


def test_ldd_output_reads_as_found_and_missing_with_the_driver_excused():
    script = load_script()
    needed = {n.name: n for n in script.parse_ldd(LDD_OUTPUT)}
    assert set(needed) == {"libcublas.so.13", "libnvinfer.so.10", "libcuda.so.1", "libc.so.6"}
    assert needed["libcublas.so.13"].ok and needed["libc.so.6"].ok
    assert not needed["libnvinfer.so.10"].ok
    assert needed["libcuda.so.1"].ok  # mounted by the NVIDIA runtime when the container starts


def test_ldd_resolves_a_real_library():
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    (library,) = [p for p in capi.glob("libonnxruntime.so*") if p.is_file() and not p.is_symlink()][:1]
    needed = load_script().ldd(library, [])
    assert needed and all(n.ok for n in needed)


def test_without_the_gpu_build_of_onnxruntime_the_check_fails_and_says_so():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "libonnxruntime_providers_tensorrt.so: not in this onnxruntime" in result.stdout


def test_the_tensorrt_extra_is_tensorrt_10_for_cuda_13_as_the_provider_links():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (tensorrt,) = project["optional-dependencies"]["tensorrt"]
    assert re.fullmatch(r"tensorrt-cu13-libs>=10\.\d+,<11", tensorrt)
    assert "libnvinfer.so.10" in _TENSORRT_LIBRARIES  # what the engines probe for


def test_the_gpu_image_registers_the_tensorrt_libraries_and_runs_the_check():
    dockerfile = (REPO / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    gpu_step = runtime[runtime.index('if [ "${RUNTIME}" = gpu ]') :]
    assert 'pip install ".[tensorrt]"' in gpu_step
    assert "/etc/ld.so.conf.d/" in gpu_step and "ldconfig" in gpu_step
    assert "python3 scripts/check_tensorrt_libs.py" in gpu_step
    assert "COPY scripts/check_tensorrt_libs.py" in runtime
