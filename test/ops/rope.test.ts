import { expect, it } from 'vitest';
import { at, ropeFrequencies } from '../../packages/shadowkv/src/backend.js';
import { applyRope } from '../oracle/index.js';
import { forEachEnv } from '../envs.js';
import { get, put } from '../helpers/device.js';
import { randn, relError, rng } from '../helpers/data.js';

const LLAMA3 = { theta: 500000, scaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } };

forEachEnv('rope', (env) => {
  it.each(['half', 'interleaved'] as const)('%s style at large positions matches float64 angles', (style) => {
    const device = env.instance.createDevice();
    const d = 128;
    // Scattered positions, a repeat, then a long consecutive run (block steps and exact reseeds).
    const positions = [0, 1, 7, 8, 9, 9, 4095, 131071, 131072, 1_000_003, ...Array.from({ length: 1500 }, (_, i) => 131_000 + i)];
    const x = Float64Array.from(randn(positions.length * d, rng(3)), Math.fround);
    const inv = ropeFrequencies(d, { ...LLAMA3, style });
    const buf = put(device, x, 'f32');
    device.rope(at(buf), positions.length, d, d, Int32Array.from(positions), put(device, inv, 'f64'), style, 1);
    expect(relError(get(device, buf), applyRope(x, positions, inv, style))).toBeLessThan(1e-6);
  });

  it('direction -1 undoes RoPE, on strided rows', () => {
    const device = env.instance.createDevice();
    const d = 64;
    const ld = 3 * d;
    const x = Float64Array.from(randn(17 * ld, rng(5)), Math.fround);
    const buf = put(device, x, 'f32');
    const inv = put(device, ropeFrequencies(d, { theta: 10000 }), 'f64');
    const pos = Int32Array.from({ length: 17 }, (_, i) => 1000 + 3 * i);
    device.rope(at(buf, d), 17, d, ld, pos, inv, 'half', 1);
    const rotated = get(device, buf);
    expect(relError(rotated, x)).toBeGreaterThan(0.1);
    expect(Array.from(rotated.slice(0, d))).toEqual(Array.from(x.slice(0, d))); // untouched column block
    device.rope(at(buf, d), 17, d, ld, pos, inv, 'half', -1);
    expect(relError(get(device, buf), x)).toBeLessThan(1e-6);
  });
}, (e) => e.dtype === 'f32');
