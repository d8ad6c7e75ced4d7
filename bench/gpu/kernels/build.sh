#!/usr/bin/env bash
# Builds bench/gpu/kernels/build/gram_bench (the prefill products on the tensor cores, checked
# against float64) and causal_attention_bench (the flash path, checked against the SIMT kernel)
# with nvcc for sm_90, statically linked to cudart like the addon, so they can be built here and
# run on the GPU machine (carry: ["bench/gpu/kernels/build"]). Each bench includes the kernel
# files whose internals it calls, so those are not listed again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
usage="bash bench/gpu/kernels/build.sh"
. scripts/args.sh
no_args "$@"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
mkdir -p bench/gpu/kernels/build
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/gram_bench.cu kernels/low_rank_keys.cu kernels/convert.cu kernels/convert_rows.cu \
  kernels/rope.cu kernels/landmarks.cu kernels/select_chunks.cu kernels/copy_words.cu -o bench/gpu/kernels/build/gram_bench
# causal_attention.cu is included by its bench (both of its kernels are called directly).
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/causal_attention_bench.cu -o bench/gpu/kernels/build/causal_attention_bench
# The miss path (gather from pinned host memory, key rebuild, both on two streams) and the select
# stage, timed part by part (they include the device code they call).
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/miss_bench.cu -o bench/gpu/kernels/build/miss_bench
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/select_bench.cu -o bench/gpu/kernels/build/select_bench
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/logits_bench.cu -o bench/gpu/kernels/build/logits_bench
nvcc -std=c++17 -O3 -arch=sm_90 -Xcompiler -Wall -cudart static bench/gpu/kernels/host_pages_bench.cu \
  -o bench/gpu/kernels/build/host_pages_bench
# A prompt's host arrays going up: pageable copies, registered, or staged on host threads.
nvcc -std=c++17 -O3 -arch=sm_90 -Xcompiler -Wall -cudart static bench/gpu/kernels/h2d_bench.cu \
  -o bench/gpu/kernels/build/h2d_bench
# Decode attention over a dense 128K cache: split kernel, merge, and a plain read of the same tiles.
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/attention_bench.cu -o bench/gpu/kernels/build/attention_bench
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/launch_bench.cu -o bench/gpu/kernels/build/launch_bench
# The same reads by tensor maps with the 128-byte swizzle, and by plain loads (bench/NOTES.md v20, v29).
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -lineinfo -Xcompiler -Wall -cudart static \
  bench/gpu/kernels/tma_read_bench.cu -o bench/gpu/kernels/build/tma_read_bench
