// A synthetic long-context workload at Llama-3-8B attention geometry through `full` and `shadowkv`
// side by side, reporting memory per tier, prefill time, decode time per step, needle selection and
// output agreement.  Run: npm run demo:workload -- [--tokens 32768] [--layers 4] [--steps 16] [--batch 1]
//                                         [--dtype bf16] [--budget 2048] [--hot-chunks 0] [--fp8-values] [--backend auto] [--focus F]
// --focus sets how strongly the queries look for the needle (default 8 + log2(tokens / 8192);
// lower: attention spread thinner over the context). --hot-chunks turns on ShadowKV's hot-value
// cache (value chunks per kv head kept on the device beyond the selection; outputs unchanged);
// --fp8-values keeps ShadowKV's host tier in fp8 (half its bytes; wasm only for now).
import { createCache, LLAMA3_8B, toFloat32, type Cache, type DType, type ShadowKVCache } from '../packages/shadowkv/src/index.js';
import { cli } from './cli.js';
import { Progress } from './progress.js';
import { cosine, relError } from './workloads/metrics.js';
import { NeedleWorkload } from './workloads/needle.js';
import type { Workload } from './workloads/Workload.js';

const args = cli('demo:workload', 'a synthetic needle workload at Llama-3-8B attention geometry through full and shadowkv', {
  tokens: { kind: 'int', default: 32768, min: 64, max: 2 ** 31 - 1, doc: 'prompt tokens per row' },
  layers: { kind: 'int', default: 4, min: 1, max: 32, doc: 'layers of the geometry' },
  steps: { kind: 'int', default: 16, min: 1, max: 1 << 20, doc: 'decode steps' },
  batch: { kind: 'int', default: 1, min: 1, max: 4096, doc: 'rows' },
  dtype: { kind: 'choice', default: 'bf16', of: ['bf16', 'f16', 'f32'], doc: 'storage dtype' },
  budget: { kind: 'int', default: 2048, min: 1, max: 65536, doc: "shadowkv's selected tokens per kv head (a multiple of its chunk size)" },
  'hot-chunks': { kind: 'int', default: 0, min: 0, max: 65536, doc: "value chunks per kv head kept on the device beyond the selection" },
  'fp8-values': { kind: 'switch', doc: "shadowkv's host tier in fp8" },
  backend: { kind: 'string', default: 'auto', doc: 'auto, wasm or cuda' },
  focus: { kind: 'number', min: 0, max: 64, doc: 'how strongly the queries look for the needle (default 8 + log2(tokens / 8192))' },
});
const { layers, steps, batch, budget } = args;
const spec = { ...LLAMA3_8B, layers };
const workload: Workload = new NeedleWorkload(spec, { tokens: args.tokens, focus: args.focus });
const POLICIES = ['full', 'shadowkv'] as const;

console.log(`shadowkv demo: Llama-3-8B attention geometry (${spec.queryHeads} q heads, ${spec.kvHeads} kv heads, d ${spec.headDim}), ${layers} layers, batch ${batch}, ${args.dtype} storage`);
console.log(`workload: ${workload.description}\n`);

const caches = {} as Record<(typeof POLICIES)[number], Cache>;
for (const policy of POLICIES) {
  // Capacity of the prompt and the generated tokens: creation checks that it fits the backend.
  const common = { spec, batch, dtype: args.dtype as DType, backend: args.backend, maxTokens: args.tokens + steps };
  caches[policy] = policy === 'shadowkv' ? await createCache({ ...common, policy, options: { budget, hotChunks: args['hot-chunks'], fp8Values: args['fp8-values'] } }) : await createCache({ ...common, policy });
}
console.log(`backend: ${caches.shadowkv.backendInfo.description} (${caches.shadowkv.backendInfo.reason})\n`);

// Prefill: one layer at a time, both caches on the same prompt; ShadowKV compresses each layer once
// its prompt is in (peak memory stays at one dense layer; otherwise the first decode step would).
const prefillMs = { full: 0, shadowkv: 0 };
const bar = new Progress('prefill', layers * POLICIES.length);
for (let l = 0; l < layers; l++) {
  const prompt = workload.prompt(l, batch);
  for (const policy of POLICIES) {
    const t0 = performance.now();
    caches[policy].prefill(l, prompt);
    if (policy === 'shadowkv') (caches[policy] as ShadowKVCache).compress({ layers: [l] });
    prefillMs[policy] += performance.now() - t0;
    bar.tick(`layer ${l} ${policy}`);
  }
}

// Decode: the same query/key/value into both caches; compare outputs per (row, head).
const decodeMs = { full: 0, shadowkv: 0 };
const cosines: number[] = [];
const relErrors: number[] = [];
let needleHits = 0;
let needleChecks = 0;
const C = (caches.shadowkv as unknown as ShadowKVCache).options.chunkSize;
const decodeBar = new Progress('decode ', steps);
for (let t = 0; t < steps; t++) {
  for (let l = 0; l < layers; l++) {
    const input = workload.step(l, batch);
    const outputs = {} as Record<(typeof POLICIES)[number], Float32Array>;
    for (const policy of POLICIES) {
      const t0 = performance.now();
      outputs[policy] = toFloat32(caches[policy].decode(l, input));
      decodeMs[policy] += performance.now() - t0;
    }
    compare(outputs.shadowkv, outputs.full, spec.headDim, cosines, relErrors);
    if (workload.needleChunk) {
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < spec.kvHeads; h++) {
          needleChecks += 1;
          if ((caches.shadowkv as unknown as ShadowKVCache).selection(l, b, h).includes(workload.needleChunk(C))) needleHits += 1;
        }
      }
    }
  }
  decodeBar.tick();
}

// Report.
const mb = (bytes: number | undefined) => (bytes === undefined ? '-' : `${(bytes / 2 ** 20).toFixed(1)} MiB`);
const mem = { full: caches.full.memory(), shadowkv: caches.shadowkv.memory() };
const stats = caches.shadowkv.stats();
const rows: [string, string, string][] = [
  ['device memory (KV on the accelerator)', mb(mem.full.device), mb(mem.shadowkv.device)],
  ['host memory (offloaded values)', mb(mem.full.host), mb(mem.shadowkv.host)],
  ['wasm heap reserved', mb(mem.full.wasmHeap), mb(mem.shadowkv.wasmHeap)],
  ['dense K/V of the same tokens', mb(mem.full.dense), mb(mem.shadowkv.dense)],
  ['prefill, all layers', `${(prefillMs.full / 1000).toFixed(2)} s`, `${(prefillMs.shadowkv / 1000).toFixed(2)} s`],
  ['decode per step, all layers', `${(decodeMs.full / steps).toFixed(1)} ms`, `${(decodeMs.shadowkv / steps).toFixed(1)} ms`],
  ['tokens attended per kv head', `${caches.full.length()}`, `${stats.lastAttendedTokens.toFixed(0)}`],
  ['chunk hit rate', '-', `${(stats.hitRate * 100).toFixed(0)} %`],
  ['misses served by the hot-value cache', '-', `${(stats.hotHitRate * 100).toFixed(0)} %`],
  ['values fetched from the host tier', '-', mb(stats.bytesFetched)],
  ['needle chunk selected', 'attends all', workload.needleChunk ? `${needleHits}/${needleChecks} (layer, row, head, step)` : '-'],
  ['output cosine vs full: mean / worst', '1', `${mean(cosines).toFixed(4)} / ${Math.min(...cosines).toFixed(4)}`],
  ['output rel. error vs full: mean / worst', '0', `${mean(relErrors).toExponential(2)} / ${Math.max(...relErrors).toExponential(2)}`],
];
console.log(`\n${'metric'.padEnd(40)}${'full'.padStart(16)}${'shadowkv'.padStart(36)}`);
for (const [name, a, b] of rows) console.log(`${name.padEnd(40)}${a.padStart(16)}${b.padStart(36)}`);
console.log(`\n(per (layer, row, query head, step) output vector; the worst are heads whose full-attention output is near zero,\n spread thin over many tokens, which top-k attention renormalizes over the selected ones)`);
console.log(`\nshadowkv decode is ${(decodeMs.full / decodeMs.shadowkv).toFixed(2)}x full's; device memory ${(mem.shadowkv.dense / mem.shadowkv.device).toFixed(1)}x below dense.`);
for (const c of Object.values(caches)) c.dispose();

/** Cosine and relative error of every (row, head) output vector of length d, appended to the lists. */
function compare(a: Float32Array, b: Float32Array, d: number, cosines: number[], relErrors: number[]): void {
  for (let o = 0; o < a.length; o += d) {
    cosines.push(cosine(a, b, o, o + d));
    relErrors.push(relError(a, b, o, o + d));
  }
}

function mean(xs: number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}
