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
#   setup:   on a terminal, `noisewatch setup` asks for the input device (from `noisewatch devices`),
#            the device id (default: the host name), the MQTT broker, user and password (the password
#            goes to /etc/noisewatch/credentials/mqtt_password, which the unit loads as the credential
#            noisewatch_mqtt_password); the --device/--mqtt-* flags below do the same without asking
#   check:   `noisewatch check-config`; if it fails the service is installed but not started and the
#            installer exits 1 with the reason
#   service: /etc/systemd/system/noisewatch.service, enabled and (re)started; /etc/logrotate.d/noisewatch,
#            which rotates a JSON-lines log in /var/log/noisewatch/
#
# Options:
#   --root DIR        install below DIR instead of / (a throwaway root for testing; the venv there
#                     is only runnable from DIR, it is not relocatable)
#   --package PATH    what pip installs: this checkout (default) or a built wheel
#   --python PY       interpreter for the venv (default: python3)
#   --no-apt          do not install system packages
#   --no-systemctl    do not reload, enable or start the service
#   --no-deps         pip install without dependencies (tests; the service will not run); skips
#                     setup and check-config unless --check is given
#   --check           run setup and check-config even with --no-deps (the venv already has the deps)
#   --non-interactive never ask, even on a terminal (without one nothing is asked anyway)
#   --device DEV      audio input: index or part of its name (see `noisewatch devices`)
#   --device-id ID    names this listener in MQTT topics and Home Assistant (default: the host name)
#   --mqtt-host HOST  broker host; turns MQTT on
#   --mqtt-port PORT  broker port
#   --mqtt-user USER  broker user; the password is read from $NOISEWATCH_MQTT_PASSWORD (never a flag)
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
ROOT=""
PACKAGE="$SOURCE"
PYTHON=python3
APT=1
SYSTEMCTL=1
PIP_DEPS=()
CHECK=""
INTERACTIVE=1
SETUP_ARGS=()
CHECK_FAILED=0
FRESH_CONFIG=0
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
      --check) CHECK=1 ;;
      --non-interactive) INTERACTIVE=0 ;;
      --device|--device-id|--mqtt-host|--mqtt-port|--mqtt-user)
        [ $# -ge 2 ] || die "$1 needs a value"
        SETUP_ARGS+=("$1" "$2"); shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
  done
  [ "$ROOT" = "/" ] && ROOT=""
  [ -n "$CHECK" ] || { [ ${#PIP_DEPS[@]} -eq 0 ] && CHECK=1 || CHECK=0; }
  [ -z "${NOISEWATCH_MQTT_PASSWORD:-}" ] || SETUP_ARGS+=(--mqtt-password-env)
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
    FRESH_CONFIG=1
  fi
  local ids
  ids="$(owner_ids)"
  install -d -m 0750 "$ROOT$STATE_DIR"
  [ -n "$ids" ] && chown "$ids" "$ROOT$STATE_DIR"
  return 0
}

configure() {  # noisewatch setup: flags if given, else questions when on a terminal
  [ "$CHECK" = 1 ] || return 0
  local setup=("$ROOT$VENV/bin/noisewatch" setup --config "$ROOT$CONFIG_DIR/config.yaml"
               --credentials "$ROOT$CONFIG_DIR/credentials")
  [ "$FRESH_CONFIG" = 0 ] || setup+=(--default-device-id)  # an existing id keeps its topics and entities
  if [ ${#SETUP_ARGS[@]} -gt 0 ]; then
    "${setup[@]}" --non-interactive "${SETUP_ARGS[@]}" || die "setup failed (above); nothing was started"
  elif [ "$INTERACTIVE" = 1 ] && [ -t 0 ] && [ "$FRESH_CONFIG" = 1 ]; then
    log "first configuration (Enter keeps the value in brackets; change it later with: sudo $VENV/bin/noisewatch setup)"
    "${setup[@]}" || die "setup failed (above); nothing was started"
  elif [ "$FRESH_CONFIG" = 1 ]; then
    "${setup[@]}" --non-interactive
    log "MQTT is off; to publish to a broker: sudo $VENV/bin/noisewatch setup"
  fi
}

check_config() {
  [ "$CHECK" = 1 ] || return 0
  # with the secrets as the unit gets them (LoadCredential=noisewatch:.../credentials): noisewatch_<file>
  local creds secret ok=0
  creds=$(mktemp -d)
  for secret in "$ROOT$CONFIG_DIR"/credentials/*; do
    [ -f "$secret" ] && ln -s "$secret" "$creds/noisewatch_$(basename "$secret")"
  done
  CREDENTIALS_DIRECTORY="$creds" "$ROOT$VENV/bin/noisewatch" check-config "$ROOT$CONFIG_DIR/config.yaml" || ok=1
  rm -rf "$creds"
  [ "$ok" = 0 ] && return 0
  CHECK_FAILED=1
  log "error: check-config failed for $CONFIG_DIR/config.yaml (above): the service cannot start"
}

install_unit() {
  install -d -m 0755 "$ROOT$UNIT_DIR"
  install -m 0644 "$SOURCE/systemd/$UNIT" "$ROOT$UNIT_DIR/$UNIT"
  install -d -m 0755 "$ROOT/etc/logrotate.d"
  install -m 0644 "$SOURCE/systemd/noisewatch.logrotate" "$ROOT/etc/logrotate.d/noisewatch"
  [ "$SYSTEMCTL" = 1 ] || { log "skipping systemctl (--no-systemctl)"; return; }
  systemctl daemon-reload
  systemctl enable "$UNIT"
  if [ "$CHECK_FAILED" = 1 ]; then
    systemctl stop "$UNIT" || true
    return
  fi
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
  configure
  check_config
  install_unit
  if [ "$CHECK_FAILED" = 1 ]; then
    die "FAILED: the service is installed but not started; fix $CONFIG_DIR/config.yaml, check it with" \
      "$VENV/bin/noisewatch check-config $CONFIG_DIR/config.yaml, then: sudo systemctl restart noisewatch"
  fi
  log "done"
}

main "$@"
