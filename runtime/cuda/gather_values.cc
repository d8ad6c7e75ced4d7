// gatherValues(pages, pageChunks, heads, h, ids, slots, n, block, dtype, fp8Rows, dst): chunks of
// head h from the paged host tier into device slots (runtime/wasm/gather_values.cc). pages: device
// table of u64 page addresses; ids, slots: device i32 [n] (slots may be 0: slot i); fp8Rows: 0, or
// C where the pages hold fp8 chunks of C rows (dequantized to dtype); bases: 0, or the device bytes
// of a packed tier's bases (pack.h: bf16 chunks, unpacked).
#include <limits.h>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value GatherValues(const Napi::CallbackInfo& info) {
  const char* op = "gatherValues";
  ArgCount(info, 12, op);
  const int n = (int)IntArg(info, 6, op, "n", INT_MIN, INT_MAX);
  const int block = (int)IntArg(info, 7, op, "block", INT_MIN, INT_MAX);
  const int page_chunks = (int)IntArg(info, 1, op, "pageChunks", INT_MIN, INT_MAX);
  const bool empty = n <= 0 || block <= 0 || page_chunks <= 0;
  const uint64_t* pages = static_cast<const uint64_t*>(PtrArg(info, 0, op, "pages", empty));
  const int heads = (int)IntArg(info, 2, op, "heads", 0, INT_MAX);
  const int h = (int)IntArg(info, 3, op, "h", 0, INT_MAX);
  if (!empty && h >= heads) throw Napi::RangeError::New(info.Env(), "gatherValues: head " + std::to_string(h) + " of " + std::to_string(heads));
  const int32_t* ids = static_cast<const int32_t*>(PtrArg(info, 4, op, "ids", empty));
  const int32_t* slots = static_cast<const int32_t*>(PtrArg(info, 5, op, "slots", true));
  const int dtype = DtypeArg(info, 8, op, "dtype");
  const int fp8_rows = (int)IntArg(info, 9, op, "fp8Rows", 0, INT_MAX);
  if (!empty && fp8_rows > 0 && block % fp8_rows)
    throw Napi::RangeError::New(info.Env(), "gatherValues: fp8 chunks of " + std::to_string(fp8_rows) + " rows cannot hold " + std::to_string(block) + " values");
  const uint8_t* bases = static_cast<const uint8_t*>(PtrArg(info, 10, op, "bases", true));
  if (!empty && bases && (fp8_rows > 0 || dtype != SKV_BF16))
    throw Napi::TypeError::New(info.Env(), "gatherValues: packed pages hold bf16 chunks, not fp8 or another dtype");
  void* dst = PtrArg(info, 11, op, "dst", empty);
  Check(info.Env(), op, ::GatherValues(pages, page_chunks, heads, h, ids, slots, n, block, dtype, fp8_rows, bases, dst, Stream()));
  return info.Env().Undefined();
}

}  // namespace shadowkv_cuda
