#!/usr/bin/env bash
# Remove the noisewatch service and its venv:   sudo scripts/uninstall.sh [--purge]
#
# Keeps /etc/noisewatch (config, credentials), /var/lib/noisewatch (clips, spool) and the
# `noisewatch` user, so a later install picks up where this one stopped. --purge removes those too.
#
# Options:
#   --root DIR        uninstall below DIR instead of / (the throwaway root of install.sh --root)
#   --no-systemctl    do not stop, disable or reload
#   --purge           also delete the config, the state and the user
set -euo pipefail

ROOT=""
SYSTEMCTL=1
PURGE=0
USER_NAME=noisewatch
UNIT=noisewatch.service

log() { echo "uninstall: $*" >&2; }
die() { log "$*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="$(realpath -m "$2")"; shift ;;
    --no-systemctl) SYSTEMCTL=0 ;;
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done
[ "$ROOT" = "/" ] && ROOT=""
[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0)"

if [ "$SYSTEMCTL" = 1 ]; then
  [ -z "$ROOT" ] || die "--root needs --no-systemctl"
  systemctl disable --now "$UNIT" 2>/dev/null || true
fi
rm -f "$ROOT/etc/systemd/system/$UNIT" "$ROOT/etc/logrotate.d/noisewatch"
[ "$SYSTEMCTL" = 0 ] || systemctl daemon-reload
rm -rf "$ROOT/opt/noisewatch"

if [ "$PURGE" = 1 ]; then
  log "purging /etc/noisewatch, /var/lib/noisewatch and user $USER_NAME"
  rm -rf "$ROOT/etc/noisewatch" "$ROOT/var/lib/noisewatch"
  prefix=()
  [ -n "$ROOT" ] && prefix=(--prefix "$ROOT")
  if grep -q "^$USER_NAME:" "$ROOT/etc/passwd" 2>/dev/null; then
    userdel "${prefix[@]}" "$USER_NAME"
  fi
  if grep -q "^$USER_NAME:" "$ROOT/etc/group" 2>/dev/null; then
    groupdel "${prefix[@]}" "$USER_NAME"
  fi
else
  log "kept /etc/noisewatch and /var/lib/noisewatch (--purge removes them)"
fi
log "done"
