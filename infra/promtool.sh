#!/usr/bin/env bash
# Installs promtool (from Debian's prometheus package, without starting a server), once: the tests check and
# unit-test the alert rules in infra/deploy/prometheus/ with it.
SERVICE=promtool
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v promtool >/dev/null; then
  log "already installed: $(command -v promtool)"
else
  apt_install --no-install-recommends prometheus
  log "installed: $(promtool --version 2>&1 | head -n 1)"
fi
