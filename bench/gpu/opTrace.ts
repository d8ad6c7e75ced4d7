// Where a cache stops: one sparse shadowkv cache (the numerics suite's SPARSE options, d 16) made,
// prefilled with 70 random tokens and decoded 3 steps at the given scales of queries and keys, after a
// first such cache at scale 1 has decoded and been disposed (the order in which an H100 stalled,
// bench/NOTES.md v56). Every device method is wrapped to append its name to the trace file before and
// after it runs, and each phase is logged, so with SHADOWKV_CUDA_SYNC=1 (every op waits for its
// kernels) the trace's last line names the op that did not return.
// Usage: node tsx bench/gpu/opTrace.ts <trace file> <q scale> <k scale> [backend, default cuda] [dtype, default f32]
import { appendFileSync, writeFileSync } from 'node:fs';
import { createCache, resolveBackend, toFloat32, type DType } from '../../packages/shadowkv/src/backend.js';
import { randn, rng } from '../../test/helpers/data.js';

const [file, qs, ks, backend = 'cuda', dtype = 'f32'] = process.argv.slice(2);
if (!file || !(Number(qs) > 0) || !(Number(ks) > 0)) {
  console.error('usage: opTrace.ts <trace file> <q scale> <k scale> [backend] [dtype]');
  process.exit(2);
}
writeFileSync(file, '');
const log = (line: string) => appendFileSync(file, line + '\n');
const { backend: instance } = await resolveBackend(backend);
// `f` logging its name to the trace before and after each call.
const traced = (name: string, f: (...a: unknown[]) => unknown, indent = '') =>
  function (this: unknown, ...args: unknown[]) {
    log(`${indent}> ${name}`);
    const r = f.apply(this, args);
    log(`${indent}< ${name}`);
    return r;
  };
const probe = instance.createDevice();
const proto = Object.getPrototypeOf(probe) as Record<string, unknown>;
for (const name of Object.getOwnPropertyNames(proto)) {
  const f = Object.getOwnPropertyDescriptor(proto, name)?.value;  // methods only, not getters
  if (name !== 'constructor' && typeof f === 'function') proto[name] = traced(name, f);
}
// On cuda the addon's own functions too (the device's `x`), so that a call that does not return is
// named inside the method that made it.
const addon = backend === 'cuda' ? (probe as unknown as { x: Record<string, unknown> }).x : {};
for (const [name, f] of Object.entries(addon)) if (typeof f === 'function') addon[name] = traced(`x.${name}`, f as (...a: unknown[]) => unknown, '  ');
const spec = { layers: 1, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 1e12 } };
const options = { rank: 32, chunkSize: 4, budget: 16, outlierChunks: 1, localTokens: 8, sinkTokens: 0, maxRecentTokens: 16, denseThreshold: 8 };
const rand = rng(5);
const tensor = (shape: number[], scale: number) => ({ data: Float32Array.from(randn(shape.reduce((a, b) => a * b, 1), rand, scale)), shape, dtype: 'f32' as const });
for (const [q, k] of [[1, 1], [Number(qs), Number(ks)]] as const) {
  log(`== q ${q}, k ${k}: createCache`);
  const cache = await createCache({ spec, policy: 'shadowkv', dtype: dtype as DType, backend, maxTokens: 128, options });
  log('== prefill');
  cache.prefill(0, { keys: tensor([1, 2, 70, 16], k), values: tensor([1, 2, 70, 16], 1), queries: tensor([1, 4, 70, 16], q) });
  for (let step = 0; step < 3; step++) {
    log(`== decode ${step}`);
    const out = toFloat32(cache.decode(0, { query: tensor([1, 4, 1, 16], q), key: tensor([1, 2, 1, 16], k), value: tensor([1, 2, 1, 16], 1) }));
    log(`   finite ${out.every(Number.isFinite)}`);
  }
  log('== dispose');
  cache.dispose();
}
log('== done');
