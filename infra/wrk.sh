#!/usr/bin/env bash
# Installs wrk (the HTTP load generator the serving benchmarks use) from Debian's packages, once.
SERVICE=wrk
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v wrk >/dev/null; then
  log "already installed: $(command -v wrk)"
else
  apt_install wrk
fi
