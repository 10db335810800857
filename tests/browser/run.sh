#!/usr/bin/env bash
# The real-browser check of notebook 06 and of the Voilà demo page (check_widget.py), with what it needs installed:
# Debian's chromium and the playwright Python client, pointed at that chromium (playwright's own
# browser download is never used). Run from CI (.ci/run) or by hand: `make browser-check`.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "browser check: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
  echo "browser check: installing playwright (Python client)"
  .venv/bin/python -m pip install -q "playwright==1.65.2"
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# bounded: the notebook may train its two small models (a fresh clone has no runs/), then the checks
exec timeout --kill-after=30 2700 .venv/bin/python tests/browser/check_widget.py --chromium "$(command -v chromium)" "$@"
