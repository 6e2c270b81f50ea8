#!/usr/bin/env bash
# Headless Chromium for the reader tests (tests/test_reader.py: how the book's pages lay out on a phone and a
# desktop), from Debian's packages, with the fonts its recommendations name (the pages' text is measured in
# them, so every machine lays the pages out alike). Does nothing when a Chromium is already on PATH.
#
#   .ci/install-chromium.sh        as root; the reader tests' fixture runs it when Chromium is missing
set -euo pipefail

PACKAGES=(chromium fonts-liberation fonts-dejavu-core)

say() { echo "install-chromium: $*" >&2; }

for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null; then
    say "$name is installed ($(command -v "$name")); nothing to do"
    exit 0
  fi
done
[[ $(id -u) == 0 ]] || { say "ERROR: needs root (it installs Debian packages): sudo $0"; exit 1; }
command -v apt-get >/dev/null || { say "ERROR: no apt-get: install Chromium (${PACKAGES[*]}) another way"; exit 1; }
say "installing ${PACKAGES[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
chromium --version
