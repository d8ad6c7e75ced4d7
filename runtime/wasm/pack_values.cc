// bf16 values [chunks x n] into the host tier's packed chunks (pack.h): the host tier's writer
// under packedValues (the prompt's chunks at compression, snapshot restores). Chunk c goes to its
// 2n-byte slot at dst + 2n c, its base to bases[c].
#include "dtype.h"
#include "pack.h"

SKV_EXPORT void skv_pack_values(const void* src, int chunks, int n, void* dst, uint8_t* bases) {
  for (int c = 0; c < chunks && n > 0; c++)
    bases[c] = (uint8_t)pack_chunk((const uint16_t*)src + (size_t)c * n, (size_t)n, (uint8_t*)dst + (size_t)c * 2 * n);
}
