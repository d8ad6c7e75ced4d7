// A ThreadedMatmul worker: its own wasm runtime holding its row range of every weight; for each
// 'linear' it multiplies those rows and writes them into the shared output in place, then counts
// itself done (Atomics) for the thread that waits. A failure is counted too, and said on `reports`.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { HOST_ARRAY } from '../../../shadowkv/src/backends/codes.js';
import type { WasmVariant } from '../../../shadowkv/src/backends/wasm/loadWasm.js';
import { DTYPE_BYTES } from '../../../shadowkv/src/dtype.js';
import type { Tensor } from '../../../shadowkv/src/tensor.js';
import { placeRows, type WorkerCommand } from './ThreadedMatmul.js';
import { WasmMatmul, type WasmWeight } from './WasmMatmul.js';

const { variant, reports } = workerData as { variant: WasmVariant; reports: MessagePort };
const matmul = await WasmMatmul.create(variant);
const weights = new Map<number, WasmWeight | Error>();

function run(c: WorkerCommand): void {
  if (c.op === 'prepare') {
    // NOTE: kept as the error it raised (a heap too small): the next product with it reports it.
    try {
      const data = new HOST_ARRAY[c.dtype](c.data.buffer as ArrayBuffer, c.data.byteOffset, c.data.byteLength / DTYPE_BYTES[c.dtype]) as Tensor['data'];
      weights.set(c.id, matmul.prepare({ data, shape: [c.rows, c.cols], dtype: c.dtype }) as WasmWeight);
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
    placeRows(matmul, new Float32Array(c.x, 0, c.M * w.cols), c.M, w, 0, c.r1 - c.r0, c.out, c.N, c.r0);
  } catch (err) {
    const e = err as Error;
    reports.postMessage({ name: e.name, message: e.message });
    Atomics.add(done, 1, 1);
  }
  Atomics.add(done, 0, 1);
  Atomics.notify(done, 0);
}

parentPort!.on('message', run);
parentPort!.postMessage('ready');
