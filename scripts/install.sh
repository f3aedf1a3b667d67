#!/usr/bin/env bash
# Install noisewatch as a systemd service on Raspberry Pi OS Bookworm (64-bit, Python 3.11), from
# this checkout:   sudo scripts/install.sh
#
# What it does, each step only if needed (running it again upgrades the package and changes nothing else):
#   apt:     libportaudio2 python3-venv
#   user:    system user `noisewatch` (home /var/lib/noisewatch, no login) in the group `audio`
#   venv:    /opt/noisewatch, with noisewatch and its runtime dependencies (not editable); the
#            model lands in /opt/noisewatch/share/noisewatch/models, the default config beside it
#   config:  /etc/noisewatch/config.yaml from config/noisewatch.yaml, only if there is none (a
#            user's config is never overwritten); /etc/noisewatch/credentials/ (root only) for
#            the MQTT password: echo -n secret > /etc/noisewatch/credentials/mqtt_password
#   service: /etc/systemd/system/noisewatch.service, enabled and (re)started
#
# Options:
#   --root DIR        install below DIR instead of / (a throwaway root for testing; the venv there
#                     is only runnable from DIR, it is not relocatable)
#   --package PATH    what pip installs: this checkout (default) or a built wheel
#   --python PY       interpreter for the venv (default: python3)
#   --no-apt          do not install system packages
#   --no-systemctl    do not reload, enable or start the service
#   --no-deps         pip install without dependencies (tests; the service will not run)
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=""
PACKAGE="$SOURCE"
PYTHON=python3
APT=1
SYSTEMCTL=1
PIP_DEPS=()
USER_NAME=noisewatch
VENV=/opt/noisewatch
CONFIG_DIR=/etc/noisewatch
STATE_DIR=/var/lib/noisewatch
UNIT_DIR=/etc/systemd/system
UNIT=noisewatch.service

log() { echo "install: $*" >&2; }
die() { log "$*"; exit 1; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) ROOT="$(realpath -m "$2")"; shift ;;
      --package) PACKAGE="$(realpath "$2")"; shift ;;
      --python) PYTHON="$2"; shift ;;
      --no-apt) APT=0 ;;
      --no-systemctl) SYSTEMCTL=0 ;;
      --no-deps) PIP_DEPS=(--no-deps) ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
  done
  [ "$ROOT" = "/" ] && ROOT=""
  [ -z "$ROOT" ] || [ "$SYSTEMCTL" = 0 ] || die "--root needs --no-systemctl"
  return 0
}

install_system_packages() {
  [ "$APT" = 1 ] || { log "skipping apt (--no-apt)"; return; }
  local missing=()
  for pkg in libportaudio2 python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

create_user() {
  local prefix=()
  [ -n "$ROOT" ] && prefix=(--prefix "$ROOT")
  if [ -n "$ROOT" ] && { [ ! -f "$ROOT/etc/passwd" ] || [ "$(id -u)" != 0 ]; }; then
    log "no $ROOT/etc/passwd or not root: not creating user $USER_NAME"
    return
  fi
  if ! grep -q "^$USER_NAME:" "$ROOT/etc/passwd"; then
    log "creating system user $USER_NAME in group audio"
    grep -q "^audio:" "$ROOT/etc/group" || groupadd "${prefix[@]}" --system audio
    useradd "${prefix[@]}" --system --user-group --groups audio --home-dir "$STATE_DIR" \
      --no-create-home --shell /usr/sbin/nologin --comment "noisewatch daemon" "$USER_NAME"
  elif ! grep -q "^audio:.*[:,]$USER_NAME\(,\|$\)" "$ROOT/etc/group"; then
    usermod "${prefix[@]}" --append --groups audio "$USER_NAME"
  fi
}

owner_ids() {  # uid:gid of the service user in the target root, or nothing
  awk -F: -v u="$USER_NAME" '$1 == u { print $3 ":" $4 }' "$ROOT/etc/passwd" 2>/dev/null || true
}

install_venv() {
  [ -x "$ROOT$VENV/bin/python" ] || { log "creating venv $VENV"; "$PYTHON" -m venv "$ROOT$VENV"; }
  local pip=("$ROOT$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  log "pip install $(basename "$PACKAGE")"
  # Dependencies first, then the package itself again: an unchanged version number must not
  # leave old code in place when the checkout has moved on.
  [ ${#PIP_DEPS[@]} -gt 0 ] || "${pip[@]}" --upgrade "$PACKAGE"
  "${pip[@]}" --force-reinstall --no-deps "$PACKAGE"
  [ -f "$ROOT$VENV/share/noisewatch/models/urban11.json" ] || log "warning: no model bundle in $VENV/share/noisewatch/models"
  "$ROOT$VENV/bin/noisewatch" --version >/dev/null
}

install_config() {
  install -d -m 0755 "$ROOT$CONFIG_DIR"
  install -d -m 0700 "$ROOT$CONFIG_DIR/credentials"
  if [ -e "$ROOT$CONFIG_DIR/config.yaml" ]; then
    log "keeping existing $CONFIG_DIR/config.yaml"
  else
    install -m 0644 "$SOURCE/config/noisewatch.yaml" "$ROOT$CONFIG_DIR/config.yaml"
  fi
  local ids
  ids="$(owner_ids)"
  install -d -m 0750 "$ROOT$STATE_DIR"
  [ -n "$ids" ] && chown "$ids" "$ROOT$STATE_DIR"
  [ ${#PIP_DEPS[@]} -eq 0 ] || return 0
  "$ROOT$VENV/bin/noisewatch" check-config "$ROOT$CONFIG_DIR/config.yaml" ||
    log "warning: $CONFIG_DIR/config.yaml has problems (above); the service will not start until they are fixed"
}

install_unit() {
  install -d -m 0755 "$ROOT$UNIT_DIR"
  install -m 0644 "$SOURCE/systemd/$UNIT" "$ROOT$UNIT_DIR/$UNIT"
  [ "$SYSTEMCTL" = 1 ] || { log "skipping systemctl (--no-systemctl)"; return; }
  systemctl daemon-reload
  systemctl enable "$UNIT"
  systemctl restart "$UNIT"
  log "started; follow it with: journalctl -fu noisewatch"
}

main() {
  parse_args "$@"
  [ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
  install_system_packages
  create_user
  install_venv
  install_config
  install_unit
  log "done"
}

main "$@"
