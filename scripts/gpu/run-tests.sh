#!/usr/bin/env bash
# The command the GPU machine runs (it has no Node.js and no network). It expects what
# `bash scripts/gpu/pack.sh` put in .gpu/ here, carried with the working tree (carry: [".gpu"]):
#   .gpu/node.xz               the Node 20 binary of the build machine, xz-compressed
#   .gpu/node_modules.tar.xz   the repo's node_modules (vitest and the SDK's dependencies)
#   .gpu/shadowkv_cuda.node.xz the addon built there (sm_80 + sm_90 cubins, sm_90 PTX)
#   .gpu/wasm/*.wasm           the wasm runtime built there (build output, not in the tree)
# It unpacks node into /tmp and node_modules into the repo, points SHADOWKV_CUDA_ADDON at the addon,
# sets SHADOWKV_CUDA_SYNC=1 (every op waits for its kernels, so a fault names its op), and runs the
# suites that run per backend env, which now include cuda-bf16: the addon check, ops,
# conformance (vs the float64 oracle), bad input, fidelity, parity (which lists cuda as skipped), the
# steady-state call count, decode steps queued behind a long kernel and the dense step's fused
# attention (both run again with SHADOWKV_CUDA_SYNC=0), device tensors (inputs and outputs left on the GPU), and device memory
# (dispose() measured with cudaMemGetInfo and the addon's block count: one `device-memory:` line each),
# and the conformance kit (shadowkv/testing) on every built-in policy and the example plugin.
# Arguments go to vitest; without any, `-t cuda` runs only the cuda tests (the addon check and
# every `[cuda-bf16]` suite); pass e.g. `-t .` for the wasm envs too, or `-t sparseAttention`.
# With $OUT set, vitest's JSON reports are written to $OUT/vitest.json and $OUT/vitest-memory.json.
# Usage: bash scripts/gpu/run-tests.sh [vitest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/gpu/env.sh
nvidia-smi -L || true
echo "node $(node --version), addon $SHADOWKV_CUDA_ADDON"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-t cuda)
report() { [ -z "${OUT:-}" ] || echo --reporter=default --reporter=json "--outputFile=$OUT/$1"; }
rc=0
# shellcheck disable=SC2046
node node_modules/vitest/vitest.mjs run test/native/cudaAddon.test.ts test/native/cudaStepRecord.test.ts test/ops test/conformance \
  test/badInput test/fidelity test/seam/parity.test.ts test/seam/cudaSteadyState.test.ts test/seam/cudaStepGroupings.test.ts test/seam/cudaQueuedSteps.test.ts test/seam/cudaDenseStep.test.ts \
  test/api/deviceTensor.test.ts test/lifecycle/compressionScratch.test.ts test/policies examples/custom-policy $(report vitest.json) "${args[@]}" || rc=$?
# Steps queued on the GPU, again without SHADOWKV_CUDA_SYNC (with it every op waits, and nothing queues).
# shellcheck disable=SC2046
SHADOWKV_CUDA_SYNC=0 node node_modules/vitest/vitest.mjs run test/seam/cudaQueuedSteps.test.ts test/seam/cudaDenseStep.test.ts $(report vitest-queued.json) "${args[@]}" || rc=$?
# The fused step's kernels launched one by one instead of replayed from graphs: the same bits.
# shellcheck disable=SC2046
SHADOWKV_CUDA_GRAPHS=0 node node_modules/vitest/vitest.mjs run test/seam/parity.test.ts test/seam/cudaStepGroupings.test.ts test/seam/cudaDenseStep.test.ts $(report vitest-nographs.json) "${args[@]}" || rc=$?
# Device memory alone: its cudaMemGetInfo check is device-wide, and the other files' processes
# allocate on the same GPU (a 192 MiB dip between its samples failed it twice on an H200).
# shellcheck disable=SC2046
node node_modules/vitest/vitest.mjs run test/lifecycle/deviceMemory.test.ts --passWithNoTests $(report vitest-memory.json) "${args[@]}" || rc=$?
exit $rc
