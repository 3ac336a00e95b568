#!/usr/bin/env bash
# The image's entry point: serve the artifact baked in at build time.
#
#   scripts/docker-serve.sh ARTIFACT_DIR [slipstream serve flags...]
#
# Settings come from flags or SLIPSTREAM_* environment variables (e.g.
# SLIPSTREAM_PORT, SLIPSTREAM_DEVICE, SLIPSTREAM_API_KEY); see `slipstream serve --help`.
# exec: the server replaces this shell (PID 1 in the container), so the SIGTERM
# of `docker stop` reaches it and it drains its queue before exiting.
set -euo pipefail

artifact="${1:?usage: $0 ARTIFACT_DIR [slipstream serve flags...]}"
shift
exec slipstream serve "$artifact" "$@"
