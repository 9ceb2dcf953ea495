#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs every test,
# with a private one-node Slurm cluster for the executor's tests.
source "$(dirname "$0")/env.sh"
cargo build --workspace --tests --all-features --quiet
if slurm_env="$(bash scripts/slurm.sh up)"; then
  eval "$slurm_env"
  trap 'bash scripts/slurm.sh down' EXIT
else
  echo "test.sh: WARNING: the test Slurm cluster did not start; the Slurm tests will fail in CI and skip elsewhere" >&2
fi
cargo test --workspace --all-features -- --test-threads 4
