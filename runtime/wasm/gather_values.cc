// Fetches the values of missed chunks from the paged host tier into their device slots: one
// memcpy per chunk where the tier holds the storage dtype; where it holds fp8 (fp8_rows = C > 0),
// each chunk is dequantized (exactly, fp8.h) and rounded to the storage dtype; where it is packed
// (bases), each chunk is unpacked (pack.h: the same bits).
#include "dtype.h"
#include "fp8.h"
#include "pack.h"
#include "scratch.h"

namespace {

const char* chunk_at(void* const* pages, int page_chunks, int heads, int h, int32_t id, size_t bytes) {
  return (const char*)pages[(size_t)(id / page_chunks) * heads + h] + (size_t)(id % page_chunks) * bytes;
}

void gather_fp8(void* const* pages, int page_chunks, int heads, int h, const int32_t* ids, const int32_t* slots, int n,
                int block, int dtype, int C, void* dst) {
  Scratch<float> rows((uint64_t)block);
  const int d = block / C;
  const size_t in = fp8_chunk_bytes(C, d), out = (size_t)block * dtype_size(dtype);
  for (int i = 0; i < n; i++) {
    fp8_dequantize_chunk((const uint8_t*)chunk_at(pages, page_chunks, heads, h, ids[i], in), C, d, rows);
    store_f32(rows, (char*)dst + (size_t)(slots ? slots[i] : i) * out, dtype, (size_t)block);
  }
}

void gather_packed(void* const* pages, int page_chunks, int heads, int h, const int32_t* ids, const int32_t* slots, int n,
                   int block, const uint8_t* bases, void* dst) {
  for (int i = 0; i < n; i++) {
    const int base = bases[pack_index(page_chunks, heads, h, ids[i])];
    const uint8_t* chunk = (const uint8_t*)chunk_at(pages, page_chunks, heads, h, ids[i], 2 * (size_t)block);
    uint16_t* to = (uint16_t*)dst + (size_t)(slots ? slots[i] : i) * block;
    for (int j = 0; j < block; j++) to[j] = pack_read(chunk, (size_t)block, base, (size_t)j);
  }
}

}  // namespace

SKV_EXPORT void skv_gather_values(void* const* pages, int page_chunks, int heads, int h,
                                  const int32_t* ids, const int32_t* slots, int n, int block, int dtype,
                                  int fp8_rows, const uint8_t* bases, void* dst) {
  if (n <= 0 || block <= 0 || page_chunks <= 0) return;
  if (fp8_rows > 0) return gather_fp8(pages, page_chunks, heads, h, ids, slots, n, block, dtype, fp8_rows, dst);
  if (bases) return gather_packed(pages, page_chunks, heads, h, ids, slots, n, block, bases, dst);
  const size_t bytes = (size_t)block * dtype_size(dtype);  // one chunk
  for (int i = 0; i < n; i++)
    memcpy((char*)dst + (size_t)(slots ? slots[i] : i) * bytes, chunk_at(pages, page_chunks, heads, h, ids[i], bytes), bytes);
}
