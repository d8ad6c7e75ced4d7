// Reaching the device under a cache, to time it: a wrapping backend records every device it makes,
// and a StepClock times decode steps on it with CUDA events (wall time on a backend without them).
import {
  createCache, registerBackend, resolveBackend, type CacheOf, type CreateCacheOptions, type Device, type LayerStep,
} from '../../packages/shadowkv/src/backend.js';

/** What CudaDevice adds for benchmarks (packages/shadowkv-cuda/src/CudaDevice.ts). */
export interface GpuTiming {
  /** GPU ms between CUDA events recorded before and after `work`; waits for it. */
  gpuTime(work: () => void): number;
  synchronize(): void;
}

export type BenchDevice = Device & Partial<GpuTiming>;

const made: BenchDevice[] = [];

/**
 * Registers `<name>-bench`: the backend `name` (started through the registry, e.g. cuda from the
 * shadowkv-cuda package) whose devices are recorded, so the benchmark can time them. Returns the new name.
 */
export function registerBenchBackend(name: string): string {
  // NOTE: with SHADOWKV_CUDA_SYNC=1 (scripts/gpu/env.sh's default, for the tests) every op waits for
  // its kernels, and the timings measure the waits: own full read 0.69x of SDPA instead of 0.89x.
  if (name.startsWith('cuda') && process.env.SHADOWKV_CUDA_SYNC === '1') {
    throw new Error('bench: SHADOWKV_CUDA_SYNC=1 makes every CUDA op wait, so nothing timed would be the step; unset it or set it to 0');
  }
  registerBackend(`${name}-bench`, async () => {
    const base = (await resolveBackend(name)).backend;
    return {
      ...base,
      createDevice: () => {
        const d = base.createDevice();
        // SKV_BENCH_LOWRANK_INLINE=1: compress()'s factorization in line, as before the device ran
        // it alongside the landmarks, for side-by-side timing (bench/NOTES.md v33).
        if (process.env.SKV_BENCH_LOWRANK_INLINE === '1') d.lowRankKeysAlongside = undefined;
        made.push(d);
        return d;
      },
    };
  }, 0);
  return `${name}-bench`;
}

/** A cache through the public `createCache`, and the device it runs on. */
export async function benchCache<P extends 'shadowkv' | 'full'>(o: CreateCacheOptions<P>): Promise<{ cache: CacheOf<P>; device: BenchDevice }> {
  made.length = 0;
  const cache = await createCache(o);
  const device = made.pop();
  if (!device || made.length) throw new Error(`benchCache: expected one device from backend '${o.backend}', got ${made.length + (device ? 1 : 0)}; is it a -bench backend?`);
  return { cache, device };
}

/**
 * Times decode steps on one device. `span` is the GPU time between CUDA events around some work
 * (wall time where the device has no events). Where the device has the fused `decodeLayer`, the
 * clock also records events around each call of it: the kernels of the step alone, without the
 * staging of inputs or the read of the output (`takeKernel`).
 */
export class StepClock {
  readonly events: boolean;
  readonly fused: boolean;
  /** Whether the fused step's calls are timed now (the events cost the host a little: off while timing wall time). */
  kernels = false;
  private kernel = { ms: 0, calls: 0 };

  constructor(private readonly device: BenchDevice) {
    this.events = typeof device.gpuTime === 'function' && works(() => device.gpuTime!(() => {}));
    const step = device.decodeLayer?.bind(device);
    this.fused = step !== undefined;
    if (step && this.events) {
      device.decodeLayer = (s: LayerStep) => {
        if (!this.kernels) return step(s);
        this.kernel.ms += device.gpuTime!(() => step(s));
        this.kernel.calls += 1;
      };
    }
  }

  /** How `gpu_ms` is measured on this device, for the JSON. */
  get method(): string {
    if (!this.events) return 'wall time (no GPU events on this device: another backend, or an addon built before eventRecord)';
    return this.fused
      ? 'CUDA events around each fused decodeLayer call (kernels only)'
      : 'CUDA events around the decode() calls (no fused step: the span includes the host\'s gaps between ops)';
  }

  span(work: () => void): number {
    if (this.events) return this.device.gpuTime!(work);
    const t = performance.now();
    work();
    return performance.now() - t;
  }

  /** Whether `takeKernel` can time the fused step's kernels on this device. */
  get kernelTimer(): boolean {
    return this.fused && this.events;
  }

  /** GPU ms and calls of the fused step since the last take. */
  takeKernel(): { ms: number; calls: number } {
    const k = this.kernel;
    this.kernel = { ms: 0, calls: 0 };
    return k;
  }

  /** Waits for every op issued (wall timings of work that does not read back). */
  sync(): void {
    this.device.synchronize?.();
  }
}

/** Whether a call runs without throwing (an addon built before the event calls lacks them). */
function works(call: () => unknown): boolean {
  try {
    call();
    return true;
  } catch {
    return false;
  }
}
