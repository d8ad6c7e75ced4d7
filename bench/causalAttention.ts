// Wasm causal prefill attention (the op `cache.prefill(layer, { queries })` runs per kv group):
// GFLOP/s at prompt lengths and head dims. One kv group of `--group` query heads, the whole
// prompt at once (offset 0), f32 or bf16 keys and values.
// Usage: npx tsx bench/causalAttention.ts [--tokens 4096,16384] [--dims 64,128] [--group 4] [--dtype f32]
import { at, resolveBackend, type DType } from '../packages/shadowkv/src/backend.js';
import { randn, rng } from '../examples/workloads/random.js';
import { put, zerosOn } from '../test/helpers/device.js';
import { cli } from '../examples/cli.js';

const args = cli('bench/causalAttention', 'wasm causal prefill attention: GFLOP/s at prompt lengths and head dims', {
  tokens: { kind: 'ints', default: [4096, 16384], min: 1, max: 1 << 20, doc: 'prompt lengths' },
  dims: { kind: 'ints', default: [64, 128], min: 2, max: 1024, doc: 'head dims' },
  group: { kind: 'int', default: 4, min: 1, max: 256, doc: 'query heads of the kv group' },
  dtype: { kind: 'choice', default: 'f32', of: ['f32', 'f16', 'bf16'], doc: 'keys and values' },
});
const g = args.group;
const dtype = args.dtype as DType;

const { backend } = await resolveBackend('wasm');
console.log(`${backend.description}; one kv group of ${g} query heads, ${dtype} keys/values`);
for (const S of args.tokens)
  for (const d of args.dims) {
    const device = backend.createDevice();
    const rand = rng(S + d);
    const q = put(device, randn(g * S * d, rand), 'f32');
    const k = put(device, randn(S * d, rand), dtype);
    const v = put(device, randn(S * d, rand), dtype);
    const out = zerosOn(device, g * S * d, 'f32');
    const t = performance.now();
    device.causalAttention(at(q), g, S, d, 1 / Math.sqrt(d), 0, at(k), at(v), at(out));
    const s = (performance.now() - t) / 1000;
    // q·k and p·v: 2 flops each per (query, visible key, channel); row i sees i + 1 keys.
    const flops = 4 * d * g * ((S * (S + 1)) / 2);
    console.log(`S=${S} d=${d}: ${s.toFixed(2)} s, ${(flops / s / 1e9).toFixed(2)} GFLOP/s`);
    device.dispose();
  }
