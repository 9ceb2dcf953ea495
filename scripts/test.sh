#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (idempotently) and runs every test,
# with a private one-node Slurm cluster for the executor's tests.
source "$(dirname "$0")/env.sh"
target="${CARGO_TARGET_DIR:-target}"
if [ ! -d "$target/debug" ]; then
  # Measured from a fresh clone (CI, without incremental state): the build
  # with every test binary takes 2.3 GB, the crates it fetches 0.7 GB.
  cargo_home="${CARGO_HOME:-$HOME/.cargo}"
  crates=700; [ ! -d "$cargo_home/registry" ] || crates=0
  need_disk "the test build" "$target" 2600 "$cargo_home" "$crates"
fi
cargo build --workspace --tests --all-features --quiet
# Independent readers the lineage-export tests check against: the Python
# `prov` package and `jsonschema` (in a venv of their own, beside the torch one).
TOOLS="${PIPELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/avdfd-pipeline}/test-tools-1"
if [ ! -f "$TOOLS/.complete" ]; then
  echo "test.sh: creating $TOOLS (prov, jsonschema)" >&2
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --no-cache-dir "prov==2.1.1" "jsonschema==4.25.1"
  touch "$TOOLS/.complete"
fi
export PIPELINE_TEST_PYTHON="$TOOLS/bin/python3"
# Headless Chromium opens the report page in its test (Debian's package).
if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
  echo "test.sh: installing chromium (the report page's test)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if slurm_env="$(bash scripts/slurm.sh up)"; then
  eval "$slurm_env"
  trap 'bash scripts/slurm.sh down' EXIT
else
  echo "test.sh: WARNING: the test Slurm cluster did not start; the Slurm tests will fail in CI and skip elsewhere" >&2
fi
cargo test --workspace --all-features -- --test-threads 4
