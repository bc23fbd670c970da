# Sourced by the scripts in scripts/: package installation and small helpers.
# shellcheck shell=bash

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the Debian packages that are missing; runs `apt-get update` first, once, only if
# something has to be installed (a fresh CI machine has empty package lists).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building and testing the workspace needs.
BUILD_PACKAGES=(gcc libc6-dev pkg-config libseccomp-dev busybox-static jq runc crun file procps psmisc iproute2 kmod util-linux strace mount)

# need_count OPTION VALUE USAGE: a command-line count must be a positive whole number; one
# line and exit 2 otherwise, before anything is installed, built or started.
need_count() {
  [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "scripts/$(basename "$0"): $1 needs a positive whole number, not '${2:-}'; $3" >&2; exit 2; }
}

require_root() {
  [ "$(id -u)" -eq 0 ] || { echo "$0: run as root (containers need it)" >&2; exit 1; }
}
