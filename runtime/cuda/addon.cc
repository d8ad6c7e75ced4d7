// shadowkv_cuda.node: the N-API export table, nothing else. Each entry lives in the file named
// after it (memory.cc for devices and buffers, <op>.cc for the ops); packages/shadowkv-cuda/src/
// AddonTypes.ts types every one of them.
#include "binding.h"

namespace shadowkv_cuda {
Napi::Value DeviceCount(const Napi::CallbackInfo&);
Napi::Value DeviceInfo(const Napi::CallbackInfo&);
Napi::Value SetDevice(const Napi::CallbackInfo&);
Napi::Value SelfTestOp(const Napi::CallbackInfo&);
Napi::Value MemInfo(const Napi::CallbackInfo&);
Napi::Value Synchronize(const Napi::CallbackInfo&);
Napi::Value AllocCountOp(const Napi::CallbackInfo&);
Napi::Value MemoryStats(const Napi::CallbackInfo&);
Napi::Value PointerInfo(const Napi::CallbackInfo&);
Napi::Value EventRecord(const Napi::CallbackInfo&);
Napi::Value EventElapsed(const Napi::CallbackInfo&);
Napi::Value EventRelease(const Napi::CallbackInfo&);
Napi::Value Malloc(const Napi::CallbackInfo&);
Napi::Value Free(const Napi::CallbackInfo&);
Napi::Value TrimPoolOp(const Napi::CallbackInfo&);
Napi::Value HostAlloc(const Napi::CallbackInfo&);
Napi::Value FreeHost(const Napi::CallbackInfo&);
Napi::Value Write(const Napi::CallbackInfo&);
Napi::Value Read(const Napi::CallbackInfo&);
Napi::Value ReadHost(const Napi::CallbackInfo&);
Napi::Value OutputBlock(const Napi::CallbackInfo&);
Napi::Value Copy(const Napi::CallbackInfo&);
Napi::Value CopyAside(const Napi::CallbackInfo&);
Napi::Value JoinAside(const Napi::CallbackInfo&);
Napi::Value Convert(const Napi::CallbackInfo&);
Napi::Value ConvertRows(const Napi::CallbackInfo&);
Napi::Value Gemm(const Napi::CallbackInfo&);
Napi::Value Rope(const Napi::CallbackInfo&);
Napi::Value PreRopeKeys(const Napi::CallbackInfo&);
Napi::Value LowRankKeys(const Napi::CallbackInfo&);
Napi::Value LowRankKeysAside(const Napi::CallbackInfo&);
Napi::Value JoinLowRankKeysAside(const Napi::CallbackInfo&);
Napi::Value Landmarks(const Napi::CallbackInfo&);
Napi::Value KeepLandmarks(const Napi::CallbackInfo&);
Napi::Value LandmarkBounds(const Napi::CallbackInfo&);
Napi::Value SelectChunks(const Napi::CallbackInfo&);
Napi::Value ScoreChunks(const Napi::CallbackInfo&);
Napi::Value RebuildKeys(const Napi::CallbackInfo&);
Napi::Value GatherValues(const Napi::CallbackInfo&);
Napi::Value QuantizeValues(const Napi::CallbackInfo&);
Napi::Value PackValues(const Napi::CallbackInfo&);
Napi::Value SparseAttention(const Napi::CallbackInfo&);
Napi::Value CausalAttention(const Napi::CallbackInfo&);
Napi::Value DecodeLayer(const Napi::CallbackInfo&);
Napi::Value StageStepInputs(const Napi::CallbackInfo&);
Napi::Value StepProfile(const Napi::CallbackInfo&);
Napi::Value SpecFitsOp(const Napi::CallbackInfo&);
Napi::Value CheckFiniteOp(const Napi::CallbackInfo&);
Napi::Value CheckFiniteHostOp(const Napi::CallbackInfo&);
}  // namespace shadowkv_cuda

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  using namespace shadowkv_cuda;
  const struct {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  } table[] = {
      // devices
      {"deviceCount", DeviceCount}, {"deviceInfo", DeviceInfo}, {"setDevice", SetDevice}, {"selfTest", SelfTestOp},
      {"memInfo", MemInfo}, {"synchronize", Synchronize}, {"allocCount", AllocCountOp},
      {"memoryStats", MemoryStats}, {"pointerInfo", PointerInfo},
      {"eventRecord", EventRecord}, {"eventElapsed", EventElapsed}, {"eventRelease", EventRelease},
      // buffers
      {"malloc", Malloc}, {"free", Free}, {"trimPool", TrimPoolOp}, {"hostAlloc", HostAlloc}, {"freeHost", FreeHost},
      {"write", Write}, {"read", Read}, {"readHost", ReadHost}, {"outputBlock", OutputBlock}, {"copy", Copy}, {"copyAside", CopyAside}, {"joinAside", JoinAside},
      // ops, in runtime/wasm/abi.h order
      {"convert", Convert}, {"convertRows", ConvertRows}, {"gemm", Gemm}, {"rope", Rope}, {"preRopeKeys", PreRopeKeys},
      {"lowRankKeys", LowRankKeys}, {"lowRankKeysAside", LowRankKeysAside}, {"joinLowRankKeysAside", JoinLowRankKeysAside},
      {"landmarks", Landmarks}, {"keepLandmarks", KeepLandmarks}, {"landmarkBounds", LandmarkBounds},
      {"selectChunks", SelectChunks},
      {"scoreChunks", ScoreChunks}, {"rebuildKeys", RebuildKeys}, {"gatherValues", GatherValues},
      {"quantizeValues", QuantizeValues}, {"packValues", PackValues}, {"sparseAttention", SparseAttention}, {"causalAttention", CausalAttention},
      // the fused step
      {"decodeLayer", DecodeLayer}, {"stageStepInputs", StageStepInputs}, {"stepProfile", StepProfile}, {"specFits", SpecFitsOp},
      // input checks of device tensors and of host arrays
      {"checkFinite", CheckFiniteOp}, {"checkFiniteHost", CheckFiniteHostOp},
  };
  for (const auto& e : table) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

NODE_API_MODULE(shadowkv_cuda, Init)
