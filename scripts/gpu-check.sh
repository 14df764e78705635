#!/usr/bin/env bash
# The engine's device checks on a real GPU (issue 14). This build machine has no
# GPU and no CUDA libtorch, so the device-generic path is proven here on cpu and
# on libtorch's meta device only; run this script on the first machine with an
# NVIDIA GPU (and nuget.org reachable for TorchSharp-cuda-linux). It builds the
# CUDA variant and runs the device numerics (float64 reference, bf16/fp16,
# greedy tokens) and the engine tests with PLATFORM_TEST_DEVICE=cuda, which the
# tests read (tests/Platform.Engine.Tests/TestDevice.cs).
# Without a GPU it prints what it would run, "skipped: no GPU", and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

device="${PLATFORM_TEST_DEVICE:-cuda}"
build=(dotnet build Platform.sln -c Release -nologo -clp:ErrorsOnly -v:q -p:TorchBackend=cuda)
filter="FullyQualifiedName~DeviceGenericNumericsTests|FullyQualifiedName~DeviceEngineTests|FullyQualifiedName~MetaDeviceTests|FullyQualifiedName~DeviceStartupTests|FullyQualifiedName~Platform.Engine.Tests.EngineTests"
test=(dotnet test tests/Platform.Engine.Tests -c Release --no-build -p:TorchBackend=cuda --filter "$filter" --logger "console;verbosity=normal")

if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus="$(nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>/dev/null)" || [ -z "$gpus" ]; then
  echo "gpu-check: would run, with PLATFORM_TEST_DEVICE=$device:"
  echo "  ${build[*]}"
  echo "  ${test[*]}"
  echo "skipped: no GPU"
  exit 0
fi

echo "gpu-check: GPUs found:"
echo "$gpus" | sed 's/^/  /'
"${build[@]}"
PLATFORM_TEST_DEVICE="$device" "${test[@]}"
echo "gpu-check: passed on $device"
