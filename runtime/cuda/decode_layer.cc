// decodeLayer(record[, q, k, v[, ticket]]): one decode step of one layer for every row
// (kernels/decode_layer.cu), the contract of skv_decode_layer (runtime/wasm/abi.h). record: the
// bytes of an SkvStep followed by `batch` SkvStepRow (kernels/launchers.h), as
// CudaDevice.decodeLayer writes them. q, k, v (optional, all three): the step's inputs as host
// arrays of the io dtype ([R][Hq][d], [R][Hkv][d], [R][Hkv][d]), uploaded with the rows; the
// record's q, k and v are then ignored. ticket: stageStepInputs' answer for these arrays, whose
// copies are then in the upload already (where anything was staged or uploaded since, they are
// copied again). The kernels read q, k, v and out from a copy uploaded with the rows, so a step's
// CUDA graph does not depend on them (kernels/decode_layer.cu StepGraphs). Returns SKV_OK, or
// SKV_ERR_ARG for a malformed step (nothing is changed then); out of device memory for the step's
// workspace throws (cudaCode 2), also before anything is changed. Never waits for the GPU: the
// inputs and rows go up in one copy beside the previous step's kernels (UploadStep), and every
// kernel is queued on the stream.
#include <string.h>
#include <chrono>
#include "binding.h"

namespace shadowkv_cuda {

namespace {
// Host microseconds of the decodeLayer calls since the last stepProfile, by part: the record's
// checks and the workspace; the rows and inputs copied into the pinned block (after any wait for
// its last copy); the upload's API calls; the step's launch (its plan, then a graph or its kernels).
enum { HOST_CHECK, HOST_STAGE, HOST_UPLOAD, HOST_LAUNCH, HOST_PARTS };
double host_us[HOST_PARTS] = {};
int host_calls = 0, host_staged = 0;  // calls, and those whose inputs stageStepInputs had copied already
double Now() { return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// at[k]: when part k began; at[HOST_PARTS]: when the last ended.
void AddHostParts(const double* at) {
  for (int k = 0; k < HOST_PARTS; k++) host_us[k] += at[k + 1] - at[k];
  host_calls++;
}
}  // namespace

Napi::Value DecodeLayer(const Napi::CallbackInfo& info) {
  const char* op = "decodeLayer";
  double t[HOST_PARTS + 1] = {Now()};
  if (info.Length() != 1 && info.Length() != 4 && info.Length() != 5)
    throw Napi::TypeError::New(info.Env(), "decodeLayer: expected 1, 4 or 5 arguments, got " + std::to_string(info.Length()));
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "decodeLayer: expected the step record as a typed array");
  Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  const char* bytes = static_cast<const char*>(TypedArrayData(a));
  if (a.ByteLength() < sizeof(SkvStep) || (uintptr_t)bytes % alignof(SkvStepRow)) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  SkvStep s;
  memcpy(&s, bytes, sizeof s);
  if (s.batch < 0 || a.ByteLength() != sizeof(SkvStep) + sizeof(SkvStepRow) * (size_t)s.batch)
    return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  // NOTE: read in place (the record stays the caller's until this returns).
  const SkvStepRow* rows = reinterpret_cast<const SkvStepRow*>(bytes + sizeof(SkvStep));
  if (!DecodeLayerValid(s, rows)) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
  // The host inputs (R rows each of q, k and v; R past every row's input) as stageStepInputs lays
  // them out, then the rows and the step's io (where the kernels read q, k, v and out: launchers.h SkvStepIo).
  const SkvStepIo io{s.q, s.k, s.v, s.out};
  const void* pieces[5];
  size_t sizes[5], at[5];
  int n = 0;
  uint64_t ticket = 0;
  if (info.Length() >= 4) {
    const size_t es = skv_dtype_size(s.io_dtype), heads[3] = {(size_t)s.q_heads, (size_t)s.kv_heads, (size_t)s.kv_heads};
    size_t R = 0;
    for (int i = 0; i < 3; i++) {
      Napi::TypedArray in = TypedArrayArg(info, 1 + i, op);
      const size_t row = heads[i] * s.d * es, r = in.ByteLength() / row;
      if (in.ByteLength() % row || (i && r != R)) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
      R = r;
      pieces[n] = TypedArrayData(in);
      sizes[n++] = in.ByteLength();
    }
    for (int b = 0; b < s.batch; b++)
      if (rows[b].input >= 0 && (size_t)rows[b].input >= R) return Napi::Number::New(info.Env(), SKV_ERR_ARG);
    if (info.Length() == 5) ticket = (uint64_t)IntArg(info, 4, op, "ticket", 0, (int64_t)1 << 53);
  }
  const int inputs = n;
  pieces[n] = rows;
  sizes[n++] = sizeof(SkvStepRow) * (size_t)s.batch;
  pieces[n] = &io;
  sizes[n++] = sizeof io;
  SkvWorkspace ws = Workspace(info.Env(), WS_DECODE, DecodeLayerWorkspace(s, rows), op);
  t[HOST_STAGE] = t[HOST_UPLOAD] = Now();
  bool in_place = false;
  // Host inputs land beside the io, which then names their device copies.
  char* up = UploadStep(info.Env(), pieces, sizes, n, at, op, [&](char* host, char* device) {
    t[HOST_UPLOAD] = Now();
    if (!inputs) return;
    const SkvStepIo landed{reinterpret_cast<uint64_t>(device + at[0]), reinterpret_cast<uint64_t>(device + at[1]),
                           reinterpret_cast<uint64_t>(device + at[2]), s.out};
    memcpy(host + at[inputs + 1], &landed, sizeof landed);
  }, ticket, &in_place);
  t[HOST_LAUNCH] = Now();
  cudaError_t err = ::DecodeLayer(s, rows, reinterpret_cast<const SkvStepRow*>(up + at[inputs]),
                                  reinterpret_cast<const SkvStepIo*>(up + at[inputs + 1]), ws, Stream());
  t[HOST_PARTS] = Now();
  StepQueued(info.Env(), op);
  Check(info.Env(), op, err);
  AddHostParts(t);
  host_staged += in_place;
  return Napi::Number::New(info.Env(), SKV_OK);
}

// stageStepInputs(q, k, v, dtype, limits): a decode step's host-array inputs checked and copied
// into the pinned block that the next decodeLayer uploads, in one pass while they are in the
// cache, before the policy's work on the step (so a bad input still changes nothing). limits: a
// Float64Array of q's, k's and v's bound (checkFiniteHost's limit), or null to copy unchecked.
// Returns a ticket (> 0) for decodeLayer, or -1 - i where element i of q | k | v (flat, in that
// order) is the first that fails its check (nothing is staged then). NOTE: the checks and the
// copy were three checkFiniteHost calls and a second read of the inputs in decodeLayer.
Napi::Value StageStepInputs(const Napi::CallbackInfo& info) {
  const char* op = "stageStepInputs";
  ArgCount(info, 5, op);
  const int dtype = DtypeArg(info, 3, op, "dtype");
  const void* data[3];
  size_t sizes[3];
  int64_t counts[3];
  for (int i = 0; i < 3; i++) {
    Napi::TypedArray in = TypedArrayArg(info, i, op);
    CheckHostArray(info, in, dtype, op);
    data[i] = TypedArrayData(in);
    sizes[i] = in.ByteLength();
    counts[i] = (int64_t)in.ElementLength();
  }
  const bool check = !info[4].IsNull();
  double limits[3] = {};
  if (check) {
    Napi::Float64Array l = TableArg(info, 4, op, "limits", 3);
    if (l.ElementLength() != 3) throw Napi::TypeError::New(info.Env(), "stageStepInputs: limits must hold 3 numbers (q, k, v) or be null");
    for (int i = 0; i < 3; i++) limits[i] = l[i];
  }
  int64_t bad = -1, before = 0;
  const uint64_t ticket = StageUpload(info.Env(), sizes, 3, op, [&](int k, char* to) {
    if (!check) {
      memcpy(to, data[k], sizes[k]);
      return true;
    }
    const int64_t at = FirstNonFinite(data[k], dtype, counts[k], limits[k], to);
    if (at >= 0) bad = before + at;
    before += counts[k];
    return at < 0;
  });
  return Napi::Number::New(info.Env(), ticket ? (double)ticket : -1.0 - (double)bad);
}

// specFits(qHeads, kvHeads, d): null where a model of these heads runs on the current device, else
// { kernel, need, limit }: the first launch whose shared memory (bytes a block) passes the device's
// limit for one block (kernels/launchers.h SpecFits). CudaDevice.checkSpec turns it into a ConfigError.
Napi::Value SpecFitsOp(const Napi::CallbackInfo& info) {
  const char* op = "specFits";
  ArgCount(info, 3, op);
  const int q_heads = (int)IntArg(info, 0, op, "qHeads", 1, 1 << 20), kv_heads = (int)IntArg(info, 1, op, "kvHeads", 1, 1 << 20);
  const int d = (int)IntArg(info, 2, op, "d", 1, 1 << 20);
  SkvSmemFit fit;
  Check(info.Env(), op, ::SpecFits(q_heads, kv_heads, d, &fit));
  if (!fit.kernel) return info.Env().Null();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("kernel", Napi::String::New(info.Env(), fit.kernel));
  o.Set("need", Napi::Number::New(info.Env(), (double)fit.need));
  o.Set("limit", Napi::Number::New(info.Env(), (double)fit.limit));
  return o;
}

// stepProfile(on): { stages: { append, logits, select, fetch, attention, compact } (GPU ms summed),
// steps } over the decode steps queued since the last call (waits for them), with `launches` (how
// every step since the last call was launched), `plan` (the latest sparse step's) and `host` (the
// decodeLayer calls' host microseconds by part, per call: check, stage, upload, launch; `calls`, and
// `staged`: those that found their inputs copied by stageStepInputs); then records the stages of
// the next steps (an event between each) while `on`. For benchmarks: recording costs time.
Napi::Value StepProfile(const Napi::CallbackInfo& info) {
  const char* op = "stepProfile";
  ArgCount(info, 1, op);
  if (!info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "stepProfile: argument 'on' must be a boolean");
  double ms[SKV_STEP_STAGES];
  int steps = 0;
  SkvStepLaunches l{};
  Check(info.Env(), op, ::DecodeLayerProfile(info[0].As<Napi::Boolean>().Value(), ms, &steps, &l));
  static const char* names[SKV_STEP_STAGES] = {"append", "logits", "select", "fetch", "attention", "compact"};
  Napi::Object stages = Napi::Object::New(info.Env());
  for (int k = 0; k < SKV_STEP_STAGES; k++) stages.Set(names[k], Napi::Number::New(info.Env(), ms[k]));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("stages", stages);
  o.Set("steps", Napi::Number::New(info.Env(), steps));
  auto numbers = [&](std::initializer_list<std::pair<const char*, double>> fields) {
    Napi::Object x = Napi::Object::New(info.Env());
    for (const auto& [name, v] : fields) x.Set(name, Napi::Number::New(info.Env(), v));
    return x;
  };
  Napi::Object launches = numbers({{"replayed", (double)l.replayed}, {"captured", (double)l.captured}, {"oneByOne", (double)l.one_by_one},
                                   {"landedFallbacks", (double)l.landed_fallbacks}});
  launches.Set("graphsBroken", Napi::Boolean::New(info.Env(), l.graphs_broken != 0));
  o.Set("launches", launches);
  const double calls = host_calls ? host_calls : 1;
  o.Set("host", numbers({{"check", host_us[HOST_CHECK] / calls}, {"stage", host_us[HOST_STAGE] / calls},
                         {"upload", host_us[HOST_UPLOAD] / calls}, {"launch", host_us[HOST_LAUNCH] / calls}, {"calls", (double)host_calls},
                         {"staged", (double)host_staged}}));
  for (double& t : host_us) t = 0;
  host_calls = host_staged = 0;
  o.Set("plan", numbers({{"logitSplit", l.logit_split}, {"selectBlocks", l.select_blocks}, {"rowGroups", l.row_groups},
                         {"splitFetch", l.split_fetch}, {"valueGrid", l.value_grid}, {"near", l.near}, {"fold", l.fold},
                         {"landed", l.landed}}));
  return o;
}

}  // namespace shadowkv_cuda
