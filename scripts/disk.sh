# Sourced by the scripts: `need_disk WHAT DIR MB [DIR MB ...]` stops the
# script, with one message, when the file systems that hold the DIRs (each
# one's nearest existing parent) have less room free than asked for; what is
# asked of one file system adds up. Measured needs, not guesses: see the
# callers. PIPELINE_SKIP_DISK_CHECK=1 skips the check.
need_disk() {
  [ "${PIPELINE_SKIP_DISK_CHECK:-0}" = 1 ] && return 0
  local what="$1"; shift
  local -A need=() names=() probe=()
  while [ $# -ge 2 ]; do
    local dir="$1" mb="$2" d dev; shift 2
    d="$dir"
    while [ ! -e "$d" ]; do d="$(dirname "$d")"; done
    dev="$(stat -c %d "$d")"
    need[$dev]=$(( ${need[$dev]:-0} + mb ))
    names[$dev]="${names[$dev]:+${names[$dev]} and }$dir"
    probe[$dev]="$d"
  done
  local dev free
  for dev in "${!need[@]}"; do
    free="$(df -Pm "${probe[$dev]}" | awk 'NR==2 {print $4}')"
    if [ "$free" -lt "${need[$dev]}" ]; then
      echo "ERROR: $what needs about ${need[$dev]} MB free on the file system of ${names[$dev]}," \
        "which has $free MB free. Free some room there, or point PIPELINE_CACHE (the torch venv)," \
        "CARGO_TARGET_DIR (the build) or TMPDIR (downloads, test folders) at a larger disk;" \
        "PIPELINE_SKIP_DISK_CHECK=1 skips this check." >&2
      exit 1
    fi
  done
}
