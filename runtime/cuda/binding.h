// What every op binding (runtime/cuda/<op>.cc) shares: argument readers that check what JS passed,
// the stream, the per-process workspace, and CUDA errors turned into JS errors naming the op.
// No device code here: launchers come from kernels/launchers.h.
#pragma once
#include <functional>
#include <napi.h>
#include <stdint.h>
#include <string>
#include "../../kernels/launchers.h"
#include "status.h"

namespace shadowkv_cuda {

// Every op runs on the legacy default stream, so ops and copies are ordered without events.
// NOTE: Device ops are synchronous from JS; only reads (and selectChunks, lowRankKeys) wait.
inline cudaStream_t Stream() { return 0; }

// Throws a JS Error "<op>: cudaErrorX (code): text" with `cudaCode` and `op` set.
[[noreturn]] void ThrowCuda(Napi::Env env, const char* op, cudaError_t err);

// After a launcher: throws on its error; with SHADOWKV_CUDA_SYNC=1 also waits for the kernels, so
// that a fault is reported by the op that caused it rather than by the next read.
void Check(Napi::Env env, const char* op, cudaError_t err);

// Argument i as an integer in [lo, hi], a float, or a device address (a non-negative integer below 2^53).
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t lo, int64_t hi);
float FloatArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
void* PtrArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, bool nullable = false);
int DtypeArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name);
void ArgCount(const Napi::CallbackInfo& info, size_t n, const char* op);
// Argument i as a typed array (a JS host array), and the address of its first element.
Napi::TypedArray TypedArrayArg(const Napi::CallbackInfo& info, size_t i, const char* op);
void* TypedArrayData(const Napi::TypedArray& a);
// A Float64Array of entries of `width` numbers each (a table of pointers and sizes that JS builds).
Napi::Float64Array TableArg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, size_t width);

// A grow-only device block per slot, for op temporaries (never shrinks; freed at exit).
enum WorkspaceSlot { WS_ATTENTION = 0, WS_SELECT, WS_COPY, WS_DECODE, WS_LOW_RANK, WS_SLOTS };
SkvWorkspace Workspace(Napi::Env env, WorkspaceSlot slot, size_t bytes, const char* op);
// A grow-only pinned host block for an op that is done with it when it returns (lowRankKeys).
SkvWorkspace PinnedWorkspace(Napi::Env env, size_t bytes, const char* op);
// Pinned host bytes for an async upload (or a small read's copy back): Stage returns a block of `bytes` that no pending copy
// still reads (a ring of blocks, each released by an event); after enqueuing the copy from it,
// call Staged, which records that event on the stream.
void* Stage(Napi::Env env, size_t bytes, const char* op);
void Staged(Napi::Env env, const char* op);
// `bytes` from src into a staged block, then a wait for the op stream; the block holds them until
// the staging ring comes back to it. by_kernel: copied by CopyWords (src 16-byte aligned, bytes a multiple
// of 4), which does not queue behind the copy engines' work (compress()'s value copies).
const void* ReadStaged(Napi::Env env, const void* src, size_t bytes, bool by_kernel, const char* op);
// A decode step's uploads (its rows, and q, k and v from host arrays): n pieces in one copy on a
// stream of their own into one of a few device blocks used in turn (piece k at offsets[k], 256-byte
// aligned), after the step that last read that block and before every op issued after this call.
// So the copy runs while the previous step's kernels do: on the op stream the step's two copies
// waited for them (the own full step at 4 x 128K took ~12 us longer, H200); only where the op
// stream has nothing queued does the copy go on it (SHADOWKV_CUDA_IDLE_UPLOAD). After queuing the
// step's kernels, call StepQueued, which marks the block in use until they are done. fill, where
// given, writes into the host copy, after the pieces, what depends on where they land (host: the
// copy's start, device: the block's).
// ticket: StageUpload's; where it is still current (no growth, upload or stage since) and the
// leading pieces have the staged sizes, those pieces are in the pinned block already (*in_place set).
char* UploadStep(Napi::Env env, const void* const* pieces, const size_t* bytes, int n, size_t* offsets, const char* op,
                 const std::function<void(char* host, char* device)>& fill = nullptr, uint64_t ticket = 0, bool* in_place = nullptr);
// The leading pieces (n of at most 3, of these sizes) of the next UploadStep written into its pinned
// block now, each by copy(k, where) (at the offsets UploadStep will give them), after waiting for the
// block's last copy. Returns a ticket for UploadStep, or 0 where a copy returned false (nothing staged).
uint64_t StageUpload(Napi::Env env, const size_t* bytes, int n, const char* op, const std::function<bool(int k, char* at)>& copy);
// checkFiniteHost's scan: the index of the first of the n elements of dtype at x that is NaN,
// infinite or of magnitude above limit, else -1. copy: where given, each block of elements is
// copied there as the scan reads it (the copy stops at the block that holds a bad element).
int64_t FirstNonFinite(const void* x, int dtype, int64_t n, double limit, void* copy);
// Throws a TypeError unless the array holds dtype's elements (Float32Array for f32, Uint16Array for f16/bf16).
void CheckHostArray(const Napi::CallbackInfo& info, const Napi::TypedArray& a, int dtype, const char* op);
void StepQueued(Napi::Env env, const char* op);
// Gives the device-tier blocks that the current device's pool keeps back to the device (after
// waiting for every op): before the free memory is read, at dispose, and when an allocation fails.
cudaError_t TrimPool();
// Allocations made so far (buffers and workspace growth), for Device.allocations().
double AllocCount();
void CountAlloc();
// Bytes held between calls by the workspaces (device) and the staging ring and pinned workspace
// (pinned), for memoryStats().
double WorkspaceBytes();
double StagingBytes();

}  // namespace shadowkv_cuda
