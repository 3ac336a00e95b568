"""Atomic directories (artifacts, the default model): build in a sibling temp dir, rename at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slipstream.export.errors import ExportError


def check_destination(output_dir: Path, *, force: bool) -> None:
    if output_dir.exists() and not force:
        raise ExportError(f"{output_dir} already exists; pass --force to replace it")
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"{output_dir} exists and is not a directory")


@contextmanager
def staging_directory(output_dir: Path) -> Iterator[Path]:
    """Yield an empty directory next to `output_dir` (same filesystem, so the final
    rename is atomic); it is removed if the body raises or is interrupted."""
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=parent))
        # mkdtemp makes the directory private (0700); the artifact should get the
        # permissions an ordinary mkdir would, so that e.g. a container user can read it.
        os.chmod(staging, 0o777 & ~_current_umask())
    except OSError as exc:
        raise ExportError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(staging: Path, output_dir: Path, *, force: bool) -> None:
    """Move the finished staging directory to `output_dir`, replacing an old one
    only when forced. The old artifact stays intact until the new one is in place
    under a temporary name, so a crash never leaves a half-written OUTPUT_DIR."""
    try:
        if output_dir.exists():
            if not force:
                raise ExportError(f"{output_dir} already exists; pass --force to replace it")
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            output_dir.rename(retired / output_dir.name)
            staging.rename(output_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(output_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"cannot move the artifact into {output_dir}: {exc}") from None
