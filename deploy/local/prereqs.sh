#!/usr/bin/env bash
# Installs the OS packages the build and the local stack need, when missing
# (Debian/Ubuntu; needs root or sudo). Everything else is fetched by cargo,
# Maven and deploy/local/stack.sh into the project's ignored folders.
# `cargo xtask demo` and `cargo xtask test` run it first; when everything is
# present it only looks (well under a second).
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd cc || need+=(build-essential)
have_cmd make || need+=(make)
have_cmd pkg-config || need+=(pkg-config)
have_pkg libssl-dev || need+=(libssl-dev)
have_cmd openssl || need+=(openssl)
have_cmd curl || need+=(curl)
have_cmd ps || need+=(procps)
have_cmd mvn || need+=(maven)
have_cmd java || need+=(openjdk-17-jre-headless)
have_cmd python3 || need+=(python3 python3-pip)
# `cargo xtask bench` puts the seed's kafka-python into a virtual environment.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

if (( ${#need[@]} == 0 )); then
  echo "[prereqs] all present"
  exit 0
fi
echo "[prereqs] installing: ${need[*]}"
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
# keep Debian's postgresql package from starting its own cluster on 5432
if [[ " ${need[*]} " == *" postgresql "* ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
$SUDO rm -f /usr/sbin/policy-rc.d
