import { availableParallelism } from 'node:os';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import type { WasmVariant } from '../../../shadowkv/src/backends/wasm/loadWasm.js';
import { DisposedError } from '../../../shadowkv/src/errors/DisposedError.js';
import { OutOfMemoryError } from '../../../shadowkv/src/errors/OutOfMemoryError.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { checkLinear, checkThreads, checkWeight, type Matmul, type MatmulWeight } from './Matmul.js';
import { WasmMatmul, type WasmWeight } from './WasmMatmul.js';

/** What the workers are told (matmulWorker.ts). */
export type WorkerCommand =
  | { op: 'prepare'; id: number; rows: number; cols: number; dtype: Tensor['dtype']; data: Uint8Array }
  | { op: 'linear'; id: number; M: number; N: number; r0: number; r1: number; x: SharedArrayBuffer; out: SharedArrayBuffer; done: SharedArrayBuffer };

interface ThreadedWeight extends WasmWeight {
  id: number;
}

// Products smaller than this run on the calling thread alone: a decode row's projections take tens
// of microseconds, about what waking the workers costs.
const PARALLEL_MACS = 1 << 22;
// Row ranges start at multiples of this (skv_gemm's panels and skv_linear's groups of four rows).
const ROW_ALIGN = 16;
// A worker that has not answered by then is taken for dead.
const WAIT_MS = 120_000;

/**
 * `Matmul` over the wasm runtime on several threads (Node's worker_threads): prompt-sized products
 * are split by weight rows, the calling thread taking the first range and each worker one of the
 * others, every value with the bits `WasmMatmul` gives it; small products (decode rows) stay on the
 * calling thread. Memory: the calling thread holds every weight (for the small products) and the
 * workers hold their row ranges, so the weights take about twice their size. The calling thread waits
 * with `Atomics.wait`, which browsers forbid on their main thread: there, use `WasmMatmul`.
 * `LlamaModel` makes one for `'wasm'` under Node (its `threads` option, default every core).
 * @example
 * const model = await LlamaModel.load('./my-llama', { threads: 4 }); // model.matmul.name: 'wasm-simd-x4'
 */
export class ThreadedMatmul implements Matmul {
  readonly name: string;
  /** Threads that share a product: the calling one and the workers. */
  readonly threads: number;
  private readonly main: WasmMatmul;
  private readonly workers: Worker[];
  private readonly reports: MessagePort[]; // each worker's failures, read synchronously
  private readonly prepared = new WeakSet<MatmulWeight>();
  private readonly failure: { error?: Error } = {};
  private nextId = 0;
  private disposed = false;
  private io = { x: new SharedArrayBuffer(0), out: new SharedArrayBuffer(0) };
  private readonly done = new Int32Array(new SharedArrayBuffer(8)); // [finished workers, failed workers]

  private constructor(main: WasmMatmul, started: { worker: Worker; reports: MessagePort }[]) {
    this.main = main;
    this.workers = started.map((s) => s.worker);
    this.reports = started.map((s) => s.reports);
    this.threads = this.workers.length + 1;
    this.name = `${main.name}-x${this.threads}`;
    for (const w of this.workers) {
      w.on('error', (err) => (this.failure.error ??= err));
      // NOTE: seen between calls (a waiting thread handles no events), so the next product fails at once.
      w.on('exit', (code) => (this.failure.error ??= new Error(`a worker exited (code ${code})`)));
    }
  }

  /** Starts `threads - 1` workers (default: every core), each with its own wasm runtime. */
  static async create(options: { threads?: number; variant?: WasmVariant } = {}): Promise<ThreadedMatmul> {
    const threads = checkThreads('ThreadedMatmul', options.threads ?? availableParallelism());
    const main = await WasmMatmul.create(options.variant);
    const workers = await Promise.all(Array.from({ length: threads - 1 }, () => startWorker(main.variant)));
    return new ThreadedMatmul(main, workers);
  }

  prepare(weight: Tensor): MatmulWeight {
    if (this.disposed) throw new DisposedError('ThreadedMatmul.prepare: the matmul was disposed');
    const [rows, cols] = checkWeight('ThreadedMatmul', weight);
    const w: ThreadedWeight = { ...(this.main.prepare(weight) as WasmWeight), id: this.nextId++ };
    const bytesPerRow = weight.data.byteLength / rows;
    const bytes = new Uint8Array(weight.data.buffer, weight.data.byteOffset, weight.data.byteLength);
    this.workers.forEach((worker, i) => {
      const [r0, r1] = this.range(rows, i + 1);
      if (r1 <= r0) return; // a worker past the last row: never asked for this weight
      // NOTE: a copy of the range (slice), so the caller's tensor is neither shared nor detached.
      const data = bytes.slice(r0 * bytesPerRow, r1 * bytesPerRow);
      worker.postMessage({ op: 'prepare', id: w.id, rows: r1 - r0, cols, dtype: weight.dtype, data } satisfies WorkerCommand, [data.buffer]);
    });
    this.prepared.add(w);
    return w;
  }

  linear(x: Float32Array, M: number, weight: MatmulWeight, out: Float32Array): void {
    if (this.disposed) throw new DisposedError('ThreadedMatmul.linear: the matmul was disposed');
    checkLinear('ThreadedMatmul', this.prepared, x, M, weight, out);
    const w = weight as ThreadedWeight;
    const { rows: N, cols: K } = w;
    if (this.workers.length === 0 || M * N * K < PARALLEL_MACS) return this.main.linearRows(x, M, w, 0, N, out);
    if (this.failure.error) throw this.failed();
    if (this.io.x.byteLength < 4 * M * K) this.io.x = new SharedArrayBuffer(4 * M * K);
    if (this.io.out.byteLength < 4 * M * N) this.io.out = new SharedArrayBuffer(4 * M * N);
    new Float32Array(this.io.x, 0, M * K).set(x.subarray(0, M * K));
    Atomics.store(this.done, 0, 0);
    Atomics.store(this.done, 1, 0);
    let started = 0;
    this.workers.forEach((worker, i) => {
      const [r0, r1] = this.range(N, i + 1);
      if (r1 <= r0) return;
      worker.postMessage({ op: 'linear', id: w.id, M, N, r0, r1, x: this.io.x, out: this.io.out, done: this.done.buffer as SharedArrayBuffer } satisfies WorkerCommand);
      started++;
    });
    // The first range here, while the workers take theirs; each range is placed into the shared output.
    const [r0, r1] = this.range(N, 0);
    placeRows(this.main, x, M, w, r0, r1 - r0, this.io.out, N, r0);
    for (let seen = Atomics.load(this.done, 0); seen < started; seen = Atomics.load(this.done, 0)) {
      if (Atomics.wait(this.done, 0, seen, WAIT_MS) === 'timed-out') throw this.failed(`no answer from a worker in ${WAIT_MS / 1000} s`);
    }
    if (Atomics.load(this.done, 1)) throw this.failed('a worker failed');
    out.set(new Float32Array(this.io.out, 0, M * N));
  }

  /** Rows [r0, r1) of thread t (0: the calling thread) for a weight of `rows` rows: aligned, in order. */
  private range(rows: number, t: number): [number, number] {
    const per = Math.ceil(rows / this.threads / ROW_ALIGN) * ROW_ALIGN;
    return [Math.min(rows, t * per), Math.min(rows, (t + 1) * per)];
  }

  private failed(why = 'a worker failed'): Error {
    for (const port of this.reports) {
      const m = receiveMessageOnPort(port)?.message as { name: string; message: string } | undefined;
      if (m && !this.failure.error) this.failure.error = Object.assign(new Error(m.message), { name: m.name });
    }
    const cause = this.failure.error;
    // NOTE: a worker's heap that cannot hold its rows is the one failure a caller can act on.
    if (cause?.name === 'OutOfMemoryError') return new OutOfMemoryError(`ThreadedMatmul: ${cause!.message}`);
    return new Error(`ThreadedMatmul: ${why}${cause ? `: ${cause.message}` : ''}`, { cause });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.main.dispose();
    for (const w of this.workers) void w.terminate();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Rows [first, first + n) of `weight` times x, into columns [col, col + n) of `out` (shared, `[M, N]`
 * row-major): what the calling thread (its rows of the whole weight) and each worker (all of its
 * range's rows) do.
 */
export function placeRows(matmul: WasmMatmul, x: Float32Array, M: number, weight: WasmWeight, first: number, n: number, out: SharedArrayBuffer, N: number, col: number): void {
  const block = new Float32Array(M * n);
  matmul.linearRows(x, M, weight, first, first + n, block);
  const dst = new Float32Array(out, 0, M * N);
  for (let m = 0; m < M; m++) dst.set(block.subarray(m * n, (m + 1) * n), m * N + col);
}

/**
 * A worker with its own wasm runtime, ready when this resolves; it does not keep the process alive.
 * `reports` carries its failures, which the waiting thread reads with receiveMessageOnPort.
 */
async function startWorker(variant: WasmVariant): Promise<{ worker: Worker; reports: MessagePort }> {
  const { port1, port2 } = new MessageChannel();
  const ts = import.meta.url.endsWith('.ts');
  const url = new URL(ts ? './matmulWorker.ts' : './matmulWorker.js', import.meta.url).href;
  // The TypeScript worker (this package runs from source) registers tsx's loader before it is
  // imported. NOTE: Node 20 gives a worker neither its parent's loader hooks nor those of an
  // `--import` in its execArgv before the entry is loaded; a registration inside the worker works.
  const entry = ts ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => m.register()).then(() => import(${JSON.stringify(url)}))` : new URL(url);
  const worker = new Worker(entry, { eval: ts, workerData: { variant, reports: port2 }, transferList: [port2] });
  worker.unref();
  port1.unref();
  await new Promise<void>((resolve, reject) => {
    worker.once('message', (m: unknown) => (m === 'ready' ? resolve() : reject(new Error(`ThreadedMatmul: a worker said ${String(m)}`))));
    worker.once('error', reject);
  });
  return { worker, reports: port1 };
}
