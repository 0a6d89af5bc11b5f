#!/usr/bin/env bash
# Builds the playout-engine example clients (clients/cpp, clients/node).
#
# Idempotent: on a fresh Debian machine (as root) it installs what is missing
# (apt-get update runs at most once, and only when a package is missing), runs
# `npm ci` in clients/node when the lockfile changed, and builds the C++ client
# into clients/cpp/build. When everything is already there it only asks cmake
# whether the binary is up to date, which takes well under a second.
#
#   clients/build.sh            # both clients
#   clients/build.sh cpp        # only the C++ client
#   clients/build.sh node       # only the Node.js client
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHAT="${1:-all}"
case "$WHAT" in
  all | cpp | node) ;;
  *)
    echo "usage: $0 [all|cpp|node]" >&2
    exit 2
    ;;
esac

log() { echo "build.sh: $*" >&2; }

# Runs a command quietly; shows its output only when it fails.
quiet() {
  local out
  if ! out="$("$@" 2>&1)"; then
    echo "$out" >&2
    log "failed: $*"
    return 1
  fi
}

# One build at a time (two test runs may start together).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/playlog-clients-build.lock"
  flock 9
fi

# ---------------------------------------------------------------- apt packages
CPP_PKGS=(cmake g++ libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc pkg-config)

wanted=()
if [[ "$WHAT" != node ]]; then
  wanted+=("${CPP_PKGS[@]}")
fi
if [[ "$WHAT" != cpp ]]; then
  # Node.js itself comes from Debian only when the machine has none.
  command -v node >/dev/null 2>&1 || wanted+=(nodejs)
  command -v npm >/dev/null 2>&1 || wanted+=(npm)
fi

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${wanted[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
  log "missing Debian packages: ${missing[*]}"
  SUDO=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      log "not root and no sudo: install ${missing[*]} first"
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  quiet "${SUDO[@]}" apt-get update
  for p in "${missing[@]}"; do
    candidate="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
      log "Debian package $p has no installation candidate (apt-cache policy $p)"
      exit 1
    fi
  done
  quiet "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
  log "installed ${missing[*]}"
fi

# --------------------------------------------------------------------- Node.js
if [[ "$WHAT" != cpp ]]; then
  NODE_DIR="$HERE/node"
  stamp="$NODE_DIR/node_modules/.playlog-lock.sha256"
  want="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "npm ci in clients/node"
    (cd "$NODE_DIR" && quiet npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
fi

# ------------------------------------------------------------------------- C++
if [[ "$WHAT" != node ]]; then
  CPP_DIR="$HERE/cpp"
  BUILD_DIR="$CPP_DIR/build"
  # A build tree configured for another checkout (a moved or copied repo) is stale.
  if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
    ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$CPP_DIR" "$BUILD_DIR/CMakeCache.txt"; then
    rm -rf "$BUILD_DIR"
  fi
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    log "configuring clients/cpp"
    quiet cmake -S "$CPP_DIR" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  jobs="$(nproc 2>/dev/null || echo 2)"
  quiet cmake --build "$BUILD_DIR" --parallel "$jobs"
  test -x "$BUILD_DIR/playlog_follow"
  log "built $BUILD_DIR/playlog_follow"
fi
