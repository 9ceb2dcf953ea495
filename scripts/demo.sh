#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs the main job on the
# demo profile: the whole DAG up to the report on a synthetic corpus, on the CPU.
# The workspace is ./demo; the page is demo/reports/avdfd/index.html, and
# `target/release/pipeline -w demo status` shows what made it.
source "$(dirname "$0")/env.sh"
# Measured from a fresh clone: the release build takes 2.0 GB, the demo's
# workspace 2.1 GB (its corpus, voice clones and elements).
target="${CARGO_TARGET_DIR:-target}"
build=2300; [ ! -d "$target/release" ] || build=0
data=2300; [ ! -d demo ] || data=0
need_disk "the demo" "$target" "$build" demo "$data"
# Both programs: `pipeline` and `pipeline-worker`, which runs the model stages.
cargo build --release --quiet
exec target/release/pipeline -w demo --profile demo run --until report "$@"
