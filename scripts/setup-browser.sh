#!/usr/bin/env bash
# Debian's chromium for the report's browser test (tests/report/test_browser.py drives it through playwright;
# no browser is ever downloaded by playwright). Installs only when no chromium is on PATH; never fails the build.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser: no chromium and no apt-get; the browser test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "setup-browser: not root and no sudo; install chromium yourself or the browser test will be skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    if ! $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; then
        echo "setup-browser: could not install chromium with apt-get; the browser test will be skipped"
        exit 0
    fi
fi
echo "setup-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
exit 0
