#!/usr/bin/env bash
# CI: the demo page in a real browser (tests/test_demo_browser.py). Installs Debian's chromium (the CI machine is
# fresh) and the `browser` extra (Playwright, which drives that chromium: no browser is downloaded), then runs the
# test with DEMO_BROWSER_REQUIRED=1 so that a missing browser fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
make install
.venv/bin/python -m pip install --quiet -e '.[dev,onnx,demo,browser]'
CHROMIUM="$(command -v chromium)" DEMO_BROWSER_REQUIRED=1 .venv/bin/python -m pytest tests/test_demo_browser.py -rs
