#!/usr/bin/env bash
# Installs the official OpenAI JavaScript client (npm "openai", version pinned in
# tests/Platform.Router.Tests/JsClient/package.json) next to the router test that
# drives it (OpenAiJsClientTests). node_modules is git-ignored. A second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../tests/Platform.Router.Tests/JsClient"
want=$(node -p 'require("./package.json").dependencies.openai')
have=$(node -p 'try { require("./node_modules/openai/package.json").version } catch { "" }' 2>/dev/null || true)
if [ "$have" = "$want" ]; then exit 0; fi
echo "[deps] installing the OpenAI JavaScript client openai@$want (router client tests)"
npm install --silent --no-audit --no-fund --no-package-lock >/dev/null
