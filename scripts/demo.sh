#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs the main job on the
# demo profile: the whole DAG up to the report on a synthetic corpus, on the CPU.
# The workspace is ./demo; the page is demo/reports/avdfd/index.html, and
# `target/release/pipeline -w demo status` shows what made it.
source "$(dirname "$0")/env.sh"
# Both programs: `pipeline` and `pipeline-worker`, which runs the model stages.
cargo build --release --quiet
exec target/release/pipeline -w demo --profile demo run --until report "$@"
