#!/usr/bin/env bash
# Set up a development checkout: system packages where missing, a venv in .venv, noisewatch installed
# editable. `--test` adds what the test suite needs (training stack, mosquitto, Chromium for the
# dashboard's browser test). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

apt_missing=()
need() {  # need PACKAGE COMMAND-OR-FILE
  if ! command -v "$2" >/dev/null 2>&1 && [ ! -e "$2" ]; then apt_missing+=("$1"); fi
}
ldconfig -p 2>/dev/null | grep -q 'libportaudio.so.2 ' || apt_missing+=(libportaudio2)
if [ "$want_tests" = 1 ]; then
  need mosquitto /usr/sbin/mosquitto
  need mosquitto-clients mosquitto_pub
  need openssl openssl
  need chromium /usr/bin/chromium
  need chromium-driver /usr/bin/chromedriver
  need sox sox  # scaper's audio transforms (pysox calls the binary; see below)
  need logrotate /usr/sbin/logrotate  # the shipped rule for the JSON-lines log is tested with it
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${apt_missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" != 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "$want_tests" = 1 ] && extras="[train,test,dashboard]"
pip_log=.venv/pip-install.log
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"; } >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "bootstrap: pip install failed (log above, also in $pip_log)" >&2
  exit 1
fi
# scaper (evaluate-scenes) without its soxbindings dependency, a C++ build that needs libsox-dev: it then
# uses pysox and the sox binary. Its pure dependencies are in the train extra.
if [ "$want_tests" = 1 ] && ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "scaper==1.6.5" \
     >>"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  echo "bootstrap: scaper install failed (log above)" >&2
  exit 1
fi
# The README's other runtime, tflite-runtime 2.14 (numpy<2), in a venv of its own with the runtime dependencies
# of setup.cfg but ai-edge-litert: tests/test_other_runtimes.py runs the daemon there. Its wheels stop at
# Python 3.11: without such a Python here, that test says so and skips.
py214=""
if [ "$want_tests" = 1 ]; then
  for candidate in python3 python3.11 python3.10; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 11))'; then
      py214=$candidate
      break
    fi
  done
  [ -n "$py214" ] || echo "bootstrap: no Python 3.10 or 3.11 here, so no tflite-runtime 2.14 venv" >&2
fi
if [ -n "$py214" ]; then
  [ -x .venv-tflite214/bin/python ] || "$py214" -m venv .venv-tflite214
  if ! .venv-tflite214/bin/python -m pip install -q --disable-pip-version-check "numpy<2" "tflite-runtime==2.14.0" \
       "soundfile>=0.12" "soxr>=0.3" "sounddevice>=0.4.6,<0.6" "pyyaml>=6" "pydantic>=2.5,<3" "paho-mqtt>=2.0,<3" \
       >>"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    echo "bootstrap: the tflite-runtime 2.14 venv failed (log above)" >&2
    exit 1
  fi
fi
