#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver from Debian's packages, once (quick when present): the browser the
# tests take screenshots of HTML pages with (tests/monitoring/screenshots.py), at /usr/bin/chromium.
SERVICE=browser
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  log "already installed: $(command -v chromium), $(command -v chromedriver)"
else
  apt_install --no-install-recommends chromium chromium-driver
  log "installed: $(chromium --version 2>/dev/null)"
fi
