# Sourced by the scripts: runs the idempotent set-up, then points the build at
# the torch venv it made (tch builds against that venv's libtorch).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/disk.sh"
VENV="$(bash "$ROOT/scripts/setup.sh" | tail -n 1)"
if [ -n "$VENV" ] && [ -x "$VENV/bin/python3" ]; then
  export PATH="$VENV/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
  export PIPELINE_TORCH_VENV="$VENV"
fi
cd "$ROOT"
