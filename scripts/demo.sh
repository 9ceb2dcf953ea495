#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs the main job on the
# demo profile: the whole DAG up to stage 2 on a synthetic corpus, on the CPU.
# The workspace is ./demo; `target/release/pipeline -w demo status` shows it.
source "$(dirname "$0")/env.sh"
cargo build --release --quiet
# The stand-in voice converter without libtorch (seedvc calls it 600 times);
# built on its own so that `pipeline`'s features do not reach it.
cargo build --release --quiet -p pipeline-media
exec target/release/pipeline -w demo --profile demo run --until stage2 "$@"
