#!/usr/bin/env bash
# Runs every test of the solution on a fresh Debian/Ubuntu machine:
# installs what the tests need, builds once, runs each test assembly, and ends
# with one line "N passed, N failed" summed from the TRX results.
# Exits non-zero on any failure, a build error, or when no test ran.
# Usage: ./test.sh [extra dotnet test args, e.g. --filter FullyQualifiedName~Tokenizer]
set -uo pipefail
cd "$(dirname "$0")"

bash scripts/install-deps.sh || { echo "0 passed, 1 failed"; echo "dependency installation failed" >&2; exit 1; }

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
results="$(pwd)/artifacts/test-results"
rm -rf "$results"; mkdir -p "$results"

echo "[test] building"
if ! dotnet build Platform.sln -c Release -nologo -clp:ErrorsOnly -v:q; then
  echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi

status=0
for proj in tests/*/*.csproj; do
  name=$(basename "$proj" .csproj)
  echo "[test] $name"
  dotnet test "$proj" -c Release --no-build -nologo -v:q \
    --logger "trx;LogFileName=$name.trx" --results-directory "$results" \
    --blame-hang-timeout 10m "$@" || status=1
done

passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*' "$trx" | head -1)
  get() { echo "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*'; }
  p=$(get passed); f=$(get failed); e=$(get error); t=$(get total); x=$(get executed)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
  skipped=$((skipped + ${t:-0} - ${x:-0}))
done

if [ "$failed" -gt 0 ] && command -v python3 >/dev/null; then
  python3 scripts/trx-failures.py "$results"/*.trx
fi

if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no tests ran"; status=1
fi
[ "$failed" -gt 0 ] && status=1
[ "$skipped" -gt 0 ] && echo "$skipped skipped"
echo "$passed passed, $failed failed"
exit $status
