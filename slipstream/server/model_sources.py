"""What a reader config's `model_name` names, and exporting it when it is not an artifact yet.

`model_name` is an export artifact directory (served as it is), a
`save_pretrained` directory, or a Hugging Face hub id. The last two are
exported first, in a child process (`python -m slipstream.cli export`): the
serving process never imports torch, transformers or optimum, and an export
that crashes or runs out of memory takes only the child with it. The child
runs at a lower CPU priority so that the readers that serve keep the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slipstream.batching.errors import InvalidInput
from slipstream.manifest import MANIFEST_FILE, Manifest, ManifestError, load_manifest

log = logging.getLogger("slipstream.server")

ModelKind = Literal["artifact", "model_directory", "hub"]
# What the hub accepts as a model id: a name, or an owner and a name.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Libraries `slipstream export` needs (the export extra); looked up, never imported here.
_EXPORT_MODULES = ("torch", "transformers", "optimum", "onnx")
# The export child's CPU priority, below the serving process's (0).
EXPORT_NICENESS = 10


class ExportFailed(RuntimeError):
    """The export child failed; the message is its one-line reason."""


@dataclass(frozen=True)
class ModelSource:
    kind: ModelKind
    location: str  # an absolute directory, or the hub id
    manifest: Manifest | None = None  # an artifact's, read when it was resolved

    @property
    def needs_export(self) -> bool:
        return self.kind != "artifact"


def export_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _EXPORT_MODULES)


def resolve_model(model_name: str) -> ModelSource:
    """What `model_name` is; InvalidInput (422) with the reason when it is nothing we can serve."""
    if not model_name.strip():
        raise InvalidInput("model_name: empty")
    path = Path(model_name).expanduser()
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            try:
                manifest = load_manifest(path)
            except ManifestError as exc:
                raise InvalidInput(f"model_name: {exc}") from None
            return ModelSource("artifact", str(path.resolve()), manifest)
        if (path / "config.json").is_file():
            _check_head(path / "config.json", model_name)
            return _exportable(ModelSource("model_directory", str(path.resolve())), model_name)
        raise InvalidInput(
            f"model_name: {model_name} is neither a Slipstream artifact (no {MANIFEST_FILE}) nor a "
            "save_pretrained model directory (no config.json)"
        )
    if path.exists():
        raise InvalidInput(f"model_name: {model_name} is a file; give an artifact or model directory")
    if path.is_absolute() or model_name.startswith((".", "~")) or not _HUB_ID.match(model_name):
        raise InvalidInput(f"model_name: no such directory {model_name}, and it is not a Hugging Face model id")
    return _exportable(ModelSource("hub", model_name), model_name)


def _check_head(config_file: Path, model_name: str) -> None:
    """Refuse at once what its export would refuse after a slow start: a model without a trained head."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"model_name: {config_file} is not valid JSON ({exc})") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    has_head = isinstance(architectures, list) and any(
        str(name).endswith("ForSequenceClassification") for name in architectures
    )
    if architectures and not has_head:  # no list: the export decides
        raise InvalidInput(
            f"model_name: {model_name} has no sequence-classification head (architectures: {architectures}); "
            "train one, or export it with `slipstream export --num-labels N` for a new, random head"
        )


def _exportable(source: ModelSource, model_name: str) -> ModelSource:
    if not export_available():
        raise InvalidInput(
            f"model_name: {model_name} must be exported before it can be served, and this installation "
            "cannot export (pip install 'slipstream[export]'); or export it with `slipstream export` and "
            "give the artifact directory"
        )
    return source


def export_variants(device: str, variant: str | None) -> list[str] | None:
    """Variants to export for a reader on `device`; None lets the export choose for this machine."""
    if variant is not None:
        return sorted({"fp32", variant})
    if device == "cpu":
        return ["fp32", "int8"]
    if device in ("cuda", "tensorrt"):
        return ["fp32", "fp16"]
    return None


async def export_model(
    source: ModelSource,
    output_dir: Path,
    *,
    variants: list[str] | None,
    max_length: int | None,
    timeout_s: float,
    access_token: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> None:
    """Run `slipstream export` in a child process; raise ExportFailed with its reason.

    Cancelling (the reader was removed, or the server shuts down) kills the child.
    """
    command = [sys.executable, "-m", "slipstream.cli", "export", source.location, str(output_dir), "--quiet"]
    command += ["--force"]  # a directory left by an earlier try of this reader
    if variants:
        command += ["--variants", ",".join(variants)]
    if max_length is not None:
        command += ["--max-length", str(max_length)]
    environment = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if access_token:
        environment["HF_TOKEN"] = access_token  # a gated or private hub model
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment
    )
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, process.pid, EXPORT_NICENESS)
    if on_start is not None:
        on_start(process.pid)
    log.info("exporting %s to %s (pid %d)", source.location, output_dir, process.pid)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        raise ExportFailed(f"the export took longer than export_timeout_s ({timeout_s:g} s)") from None
    finally:
        if process.returncode is None:  # timed out or cancelled: the child must not outlive its reader
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    # 3: written, but a variant that was asked for failed validation and was left out.
    if process.returncode not in (0, 3):
        raise ExportFailed(_reason(stderr.decode(errors="replace"), process.returncode))


def _reason(stderr: str, returncode: int | None) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("slipstream export: error: "):
            return "export failed: " + line.removeprefix("slipstream export: error: ")
    return f"export failed (exit status {returncode}): {lines[-1] if lines else 'no message'}"
