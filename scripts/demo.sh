#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs the main job on the
# demo profile: the whole DAG up to stage 2 on a synthetic corpus, on the CPU.
# The workspace is ./demo; `target/release/pipeline -w demo status` shows it.
source "$(dirname "$0")/env.sh"
# Both programs: `pipeline` and `pipeline-worker`, which runs the model stages.
cargo build --release --quiet
exec target/release/pipeline -w demo --profile demo run --until stage2 "$@"
