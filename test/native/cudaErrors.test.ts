// CUDA's failures as typed errors, whichever addon call they come from (stub addon, no GPU): out of
// memory an OutOfMemoryError, a sticky fault a CudaError saying the context is lost, another CUDA
// error a CudaError; what the binding refuses without a CUDA code stays as it was.
import { describe, expect, it } from 'vitest';
import { CudaError, OutOfMemoryError } from '../../packages/shadowkv/src/backend.js';
import { CudaDevice } from '../../packages/shadowkv-cuda/src/index.js';
import { at } from '../../packages/shadowkv/src/backends/Device.js';
import { stubAddon } from '../helpers/stubAddon.js';

const cudaFailure = (op: string, name: string, code: number) => () => {
  throw Object.assign(new Error(`${op}: ${name} (${code}): what CUDA said`), { cudaCode: code, op });
};

describe('CUDA failures (stub addon, no GPU)', () => {
  // Each call reaches the addon by another path: a kernel op, a read, the fused step, events.
  const calls: [string, string, (d: CudaDevice) => unknown][] = [
    ['copy', 'copy', (d) => d.copy(at(d.alloc(8, 'f32', 't')), at(d.alloc(8, 'f32', 't')), 8)],
    ['read', 'read', (d) => d.read(at(d.alloc(8, 'f32', 't')) as never, 8)],
    ['read of the host tier', 'readHost', (d) => d.read(at(d.alloc(8, 'f32', 't', 'host')) as never, 8)],
    ['stageStepInputs', 'stageStepInputs', (d) => d.stageStepInputs!([new Float32Array(4), new Float32Array(2), new Float32Array(2)], 'f32', [1, 1, 1])],
    ['synchronize', 'synchronize', (d) => d.synchronize()],
    ['convert', 'convert', (d) => d.convert(at(d.alloc(8, 'bf16', 't')), at(d.alloc(8, 'f32', 't')), 8)],
  ];

  it.each(calls)('%s: a sticky fault is a CudaError with contextLost, naming the op', (_, method, run) => {
    const { addon } = stubAddon({ [method]: cudaFailure(method, 'cudaErrorIllegalAddress', 700) });
    const err = (() => { try { run(new CudaDevice(addon, 0)); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(CudaError);
    expect(err).toMatchObject({ code: 'SKV_CUDA', cudaCode: 700, contextLost: true });
    expect((err as Error).message).toBe(`${method}: cudaErrorIllegalAddress (700): what CUDA said; the process's CUDA context is lost: no cache on this GPU can be used again, restart the process`);
  });

  it.each(calls)('%s: another CUDA error is a CudaError, the context kept; out of memory an OutOfMemoryError', (_, method, run) => {
    const other = (() => { try { run(new CudaDevice(stubAddon({ [method]: cudaFailure(method, 'cudaErrorInvalidValue', 1) }).addon, 0)); } catch (e) { return e; } })();
    expect(other).toMatchObject({ code: 'SKV_CUDA', cudaCode: 1, contextLost: false, message: `${method}: cudaErrorInvalidValue (1): what CUDA said` });
    expect(() => run(new CudaDevice(stubAddon({ [method]: cudaFailure(method, 'cudaErrorMemoryAllocation', 2) }).addon, 0))).toThrow(OutOfMemoryError);
  });

  it('an allocation out of memory names the buffer; an error without a CUDA code passes as it was', () => {
    const device = new CudaDevice(stubAddon({ malloc: cudaFailure('malloc', 'cudaErrorMemoryAllocation', 2) }).addon, 0);
    expect(() => device.alloc(1024, 'f32', 'exactTail')).toThrow(/^alloc \(exactTail, 4096 bytes, device tier\): malloc: cudaErrorMemoryAllocation \(2\): what CUDA said; use a smaller batch or context$/);
    const refused = new TypeError('copy: expected 3 arguments, got 2');
    const plain = new CudaDevice(stubAddon({ copy: () => { throw refused; } }).addon, 0);
    expect(() => plain.copy(at(plain.alloc(8, 'f32', 't')), at(plain.alloc(8, 'f32', 't')), 8)).toThrow(refused);
  });
});
