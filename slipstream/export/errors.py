"""The one exception the export stage raises for bad input or a failed export."""

from __future__ import annotations


class ExportError(Exception):
    """Export cannot proceed. The message is one line a user can act on; the CLI
    prints it and exits non-zero instead of showing a traceback."""
