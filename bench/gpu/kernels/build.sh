#!/usr/bin/env bash
# Builds bench/gpu/kernels/gram_bench (the prefill products on the tensor cores, checked against
# float64 and timed) with nvcc for sm_90, statically linked to cudart like the addon, so it can be
# built here and run on the GPU machine: bench/gpu/kernels/build/gram_bench [S].
# gemm.cu and gram.cu are included by the bench itself (it calls their internals), so they are not listed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
mkdir -p bench/gpu/kernels/build
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/gram_bench.cu kernels/low_rank_keys.cu kernels/convert.cu kernels/convert_rows.cu \
  kernels/rope.cu kernels/landmarks.cu kernels/select_chunks.cu -o bench/gpu/kernels/build/gram_bench
