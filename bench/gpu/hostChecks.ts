// The value checks of a prompt's host arrays on the CUDA backend (the addon's checkFiniteHost, the
// scan prefill runs over keys and values before anything goes up), on any machine where the addon
// is built: no GPU needed. One 128K-token row of Llama-3-8B geometry by default: keys and values of
// 8 kv heads x 128 dims, 256 MiB each in bf16; f32 the same element count. Median of --rounds.
// Then a decode step's three checks (f32 query, key and value of --batch rows), per step: the
// host time every host-array decode() pays (28-30 us at 4 rows before 789e24e, on a 2-core build machine).
//   node node_modules/tsx/dist/cli.mjs bench/gpu/hostChecks.ts [--tokens 131072] [--rounds 5] [--batch 4]
import { findAddon } from '../../packages/shadowkv-cuda/src/index.js';
import { loadAddon } from '../../packages/shadowkv-cuda/src/loadAddon.js';
import { DTYPE_CODE } from '../../packages/shadowkv-cuda/src/AddonTypes.js';
import { f32ToBf16 } from '../../packages/shadowkv/src/dtype.js';
import { valueLimit } from '../../packages/shadowkv/src/policies/validate.js';
import { cli } from '../../examples/cli.js';

const f = cli('bench/gpu/hostChecks', "the CUDA addon's value checks of host arrays (no GPU needed)", {
  tokens: { kind: 'int', default: 131072, min: 1, max: 1 << 20, doc: 'prompt tokens (8 kv heads x 128)' },
  rounds: { kind: 'int', default: 5, min: 1, max: 1000, doc: 'rounds (the median is printed)' },
  batch: { kind: 'int', default: 4, min: 1, max: 4096, doc: "rows of a decode step's checks" },
});
const n = f.tokens * 8 * 128;
const addon = loadAddon(findAddon());
const bf16 = new Uint16Array(n);
for (let i = 0; i < n; i++) bf16[i] = f32ToBf16(Math.sin(i) * 8);
const f32 = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 8);
const cases = [
  ['keys, bf16 (the limit binds: after RoPE)', bf16, DTYPE_CODE.bf16, valueLimit('bf16', 'key')],
  ['values, bf16', bf16, DTYPE_CODE.bf16, valueLimit('bf16', 'value')],
  ['keys, f32 into bf16 storage', f32, DTYPE_CODE.f32, valueLimit('bf16', 'key')],
] as const;
console.log(`checkFiniteHost over ${n} elements (${f.tokens} tokens x 8 kv heads x 128), median of ${f.rounds} rounds:`);
for (const [what, data, dtype, limit] of cases) {
  const ms: number[] = [];
  for (let r = 0; r < f.rounds; r++) {
    const t0 = performance.now();
    const at = addon.checkFiniteHost(data, dtype, limit);
    ms.push(performance.now() - t0);
    if (at !== -1) throw new Error(`hostChecks: ${what}: element ${at} was found bad in clean data`);
  }
  ms.sort((a, b) => a - b);
  console.log(`  ${what}: ${ms[Math.floor(ms.length / 2)]!.toFixed(2)} ms`);
}

const rows = f.batch, calls = 20000;
const query = new Float32Array(rows * 32 * 128).fill(0.5), kv = new Float32Array(rows * 8 * 128).fill(0.5);
const limit = valueLimit('bf16', 'key');
const perStep: number[] = [];
for (let r = 0; r < f.rounds; r++) {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    addon.checkFiniteHost(query, DTYPE_CODE.f32, limit);
    addon.checkFiniteHost(kv, DTYPE_CODE.f32, limit);
    addon.checkFiniteHost(kv, DTYPE_CODE.f32, limit);
  }
  perStep.push(((performance.now() - t0) * 1000) / calls);
}
perStep.sort((a, b) => a - b);
console.log(`a decode step's three checks (${rows} rows, f32 query, key and value): ${perStep[Math.floor(perStep.length / 2)]!.toFixed(2)} us, median of ${f.rounds} rounds of ${calls} steps`);
