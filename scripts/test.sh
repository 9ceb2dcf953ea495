#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs every test.
source "$(dirname "$0")/env.sh"
cargo build --tests --all-features --quiet
cargo test --all-features -- --test-threads 2
