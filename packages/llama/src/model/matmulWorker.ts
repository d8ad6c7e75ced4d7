// A ThreadedMatmul worker: its own wasm runtime holding its row range of every weight; for each
// 'linear' it multiplies those rows and writes them into the shared output in place, then counts
// itself done (Atomics) for the thread that waits. A failure is counted too, and said on `reports`.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { WorkerCommand } from './ThreadedMatmul.js';
import { WasmMatmul, type WasmWeight } from './WasmMatmul.js';

const { variant, reports } = workerData as { variant: 'simd' | 'plain'; reports: MessagePort };
const matmul = await WasmMatmul.create(variant);
const weights = new Map<number, WasmWeight | Error>();

function run(c: WorkerCommand): void {
  if (c.op === 'prepare') {
    // NOTE: kept as the error it raised (a heap too small): the next product with it reports it.
    try {
      weights.set(c.id, matmul.prepare({ data: dataOf(c), shape: [c.rows, c.cols], dtype: c.dtype }) as WasmWeight);
    } catch (err) {
      weights.set(c.id, err as Error);
    }
    return;
  }
  const done = new Int32Array(c.done);
  try {
    const w = weights.get(c.id);
    if (!w) throw new Error(`weight ${c.id} was never prepared here`);
    if (w instanceof Error) throw w;
    const { M, N, r0, r1 } = c;
    const K = w.cols, n = r1 - r0;
    const mine = new Float32Array(M * n);
    matmul.linearRows(new Float32Array(c.x, 0, M * K), M, w, 0, n, mine);
    const out = new Float32Array(c.out);
    for (let m = 0; m < M; m++) out.set(mine.subarray(m * n, (m + 1) * n), m * N + r0);
  } catch (err) {
    const e = err as Error;
    reports.postMessage({ name: e.name, message: e.message });
    Atomics.add(done, 1, 1);
  }
  Atomics.add(done, 0, 1);
  Atomics.notify(done, 0);
}

/** The weight rows as the dtype's typed array (the tensor shape WasmMatmul.prepare reads). */
function dataOf(c: Extract<WorkerCommand, { op: 'prepare' }>) {
  const b = c.data.buffer;
  return c.dtype === 'f32' ? new Float32Array(b, c.data.byteOffset, c.data.byteLength / 4) : new Uint16Array(b, c.data.byteOffset, c.data.byteLength / 2);
}

parentPort!.on('message', run);
parentPort!.postMessage('ready');
