#!/usr/bin/env bash
# The Dockerfile's build step: write the artifact the image will serve.
#
#   scripts/docker-export.sh MODEL OUT_DIR [gpu|cpu]
#
# MODEL is a Hugging Face hub id, a local save_pretrained directory, or
# "default" for the default reranker (distilled offline by
# `slipstream build-default`, reused from models/default-reranker when the
# build context already holds it). The runtime kind picks the variants: fp16
# for the CUDA image, int8 for the CPU one; fp32 always (the reference and
# fallback). CI runs this script, so a broken command fails CI, not a user's
# `docker build`.
set -euo pipefail

usage="usage: $0 MODEL|default OUT_DIR [gpu|cpu]"
model="${1:?$usage}"
out="${2:?$usage}"
runtime="${3:-gpu}"

case "$runtime" in
  gpu) variants="fp32,fp16" ;;
  cpu) variants="fp32,int8" ;;
  *) echo "$0: runtime must be gpu or cpu, not '$runtime'" >&2; exit 2 ;;
esac

if [[ "$model" == "default" ]]; then
  slipstream build-default \
    --model-dir "${SLIPSTREAM_DEFAULT_MODEL_DIR:-models/default-reranker}" \
    --artifact-dir "$out" --variants "$variants"
else
  status=0
  slipstream export "$model" "$out" --variants "$variants" || status=$?
  # 3: written, but a requested variant failed validation and was left out;
  # the artifact still serves (fp32), so the build goes on with a warning.
  if [[ $status -eq 3 ]]; then
    echo "$0: WARNING: a requested variant was left out; the image serves what passed" >&2
  elif [[ $status -ne 0 ]]; then
    exit "$status"
  fi
fi
