#!/usr/bin/env bash
# Install headless Chromium for the tests marked `chromium` (tests/test_report_browser.py: the HTML report of
# `snakemake --report` opened in a real browser): Debian's `chromium` package.
#
# Idempotent: installs only when no Chromium is on PATH. Needs root and apt-get on Debian (Ubuntu's `chromium` is a
# snap, which containers usually cannot run).
set -euo pipefail

log() { echo "setup-chromium: $*" >&2; }

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
log "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 \
    || { log "chromium is installed but does not start headless"; exit 1; }
log "ready: $(chromium --version 2>/dev/null)"
