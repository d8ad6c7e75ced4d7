// decodeLayer(record[, inputs]): one decode step of one layer for every row
// (kernels/decode_layer.cu), the contract of skv_decode_layer (runtime/wasm/abi.h). record: the
// bytes of an SkvStep followed by `batch` SkvStepRow (kernels/launchers.h), as
// CudaDevice.decodeLayer writes them. inputs (optional): the step's q | k | v as one host array of
// the io dtype ([R][Hq][d], [R][Hkv][d], [R][Hkv][d]), uploaded with the rows; the record's q, k
// and v are then ignored. Returns SKV_OK, or SKV_ERR_ARG for a malformed step (nothing is changed
// then); out of device memory for the step's workspace throws (cudaCode 2), also before anything
// is changed. Never waits for the GPU: the rows and inputs go up in one copy beside the previous
// step's kernels (UploadStep), and every kernel is queued on the stream.
#include <string.h>
#include <vector>
#include "binding.h"

namespace shadowkv_cuda {

Napi::Value DecodeLayer(const Napi::CallbackInfo& info) {
  const char* op = "decodeLayer";
  if (info.Length() != 1 && info.Length() != 2)
    throw Napi::TypeError::New(info.Env(), "decodeLayer: expected 1 or 2 arguments, got " + std::to_string(info.Length()));
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "decodeLayer: expected the step record as a typed array");
  Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  const char* bytes = static_cast<const char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  if (a.ByteLength() < sizeof(SkvStep)) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  SkvStep s;
  memcpy(&s, bytes, sizeof s);
  if (s.batch < 0 || a.ByteLength() != sizeof(SkvStep) + sizeof(SkvStepRow) * (size_t)s.batch)
    return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  std::vector<SkvStepRow> rows((size_t)s.batch);
  if (s.batch) memcpy(rows.data(), bytes + sizeof(SkvStep), sizeof(SkvStepRow) * rows.size());
  if (!DecodeLayerValid(s, rows.data())) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  // The host inputs: R rows of q | k | v, R past every row's input.
  const void* inputs = nullptr;
  size_t input_bytes = 0, R = 0;
  const size_t es = skv_dtype_size(s.io_dtype), per = (size_t)(s.q_heads + 2 * s.kv_heads) * s.d * es;
  if (info.Length() == 2 && !info[1].IsUndefined()) {
    Napi::TypedArray in = TypedArrayArg(info, 1, op);
    inputs = TypedArrayData(in);
    input_bytes = in.ByteLength();
    if (input_bytes % per) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
    R = input_bytes / per;
    for (const SkvStepRow& r : rows)
      if (r.input >= 0 && (size_t)r.input >= R) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  }
  SkvWorkspace ws = Workspace(info.Env(), WS_DECODE, DecodeLayerWorkspace(s, rows.data()), op);
  const void* pieces[2] = {rows.data(), inputs};
  const size_t sizes[2] = {sizeof(SkvStepRow) * rows.size(), input_bytes};
  size_t at[2];
  char* up = UploadStep(info.Env(), pieces, sizes, inputs ? 2 : 1, at, op);
  if (inputs) {
    s.q = reinterpret_cast<uint64_t>(up + at[1]);
    s.k = s.q + R * s.q_heads * s.d * es;
    s.v = s.k + R * s.kv_heads * s.d * es;
  }
  cudaError_t err = ::DecodeLayer(s, rows.data(), reinterpret_cast<const SkvStepRow*>(up + at[0]), ws, Stream());
  StepQueued(info.Env(), op);
  Check(info.Env(), op, err);
  return Napi::Number::New(info.Env(), SKV_OK);
}

// stepProfile(on): { stages: { append, logits, select, fetch, attention, compact } (GPU ms summed),
// steps } over the decode steps queued since the last call (waits for them); then records the
// stages of the next steps (an event between each) while `on`. For benchmarks: recording costs time.
Napi::Value StepProfile(const Napi::CallbackInfo& info) {
  const char* op = "stepProfile";
  ArgCount(info, 1, op);
  if (!info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "stepProfile: argument 'on' must be a boolean");
  double ms[SKV_STEP_STAGES];
  int steps = 0;
  Check(info.Env(), op, ::DecodeLayerProfile(info[0].As<Napi::Boolean>().Value(), ms, &steps));
  static const char* names[SKV_STEP_STAGES] = {"append", "logits", "select", "fetch", "attention", "compact"};
  Napi::Object stages = Napi::Object::New(info.Env());
  for (int k = 0; k < SKV_STEP_STAGES; k++) stages.Set(names[k], Napi::Number::New(info.Env(), ms[k]));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("stages", stages);
  o.Set("steps", Napi::Number::New(info.Env(), steps));
  return o;
}

}  // namespace shadowkv_cuda
