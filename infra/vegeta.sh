#!/usr/bin/env bash
# Installs vegeta (open-loop, constant-rate HTTP load in Go: the latency benchmarks' generator at rates a Python
# generator cannot hold on two cores) with `go install` from the Go module proxy, once, into $GOPATH/bin.
SERVICE=vegeta
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VERSION=v12.13.0

BIN="$(go env GOPATH 2>/dev/null)/bin/vegeta"
if [ -x "$BIN" ]; then
  log "already installed: $BIN"
else
  command -v go >/dev/null || die "vegeta needs the Go toolchain (go) to install"
  go install "github.com/tsenart/vegeta/v12@$VERSION" || die "go install vegeta@$VERSION failed"
  log "installed $BIN"
fi
echo "$BIN"
