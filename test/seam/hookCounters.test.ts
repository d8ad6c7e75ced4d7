import { expect, it, vi } from 'vitest';
import { createCache } from '../../packages/shadowkv/src/backend.js';
import { NeedleWorkload } from '../../examples/workloads/needle.js';
import { registerRecorded } from '../helpers/backends.js';

// A policy with its own attention (attendDecode: streaming, quest, plugins) keeps the layer
// counters current on the host: the device copy is read once per layer, then only written, since on
// CUDA each read waits for the GPU. stats() still reads the device copy, so both must agree.
it('a policy with its own attention reads each layer\'s counters once, and stats() still counts every step', async () => {
  const spec = { layers: 2, queryHeads: 4, kvHeads: 2, headDim: 16, rope: { theta: 10000 } };
  const { name, devices } = registerRecorded('wasm');
  const cache = await createCache({ spec, backend: name, batch: 2, policy: 'streaming', options: { sinkTokens: 2, windowTokens: 24 } });
  const device = devices.at(-1)!.device;
  const work = new NeedleWorkload(spec, { tokens: 64, seed: 3 });
  for (let l = 0; l < spec.layers; l++) cache.prefill(l, work.prompt(l, 2));
  const read = vi.spyOn(device, 'read');
  const steps = 20;
  for (let t = 0; t < steps; t++) for (let l = 0; l < spec.layers; l++) cache.decode(l, work.step(l, 2));
  const countersRead = read.mock.calls.filter(([view, n]) => view.buf.dtype === 'f64' && n === view.buf.length).length;
  expect(countersRead).toBeLessThanOrEqual(spec.layers);
  read.mockRestore();
  const stats = cache.stats();
  expect(stats.steps).toBe(steps * spec.layers);
  expect(stats.lastAttendedTokens).toBe(26); // 2 sinks + a window of 24
  cache.dispose();
});

it('a step whose hook throws leaves the counters as they were', async () => {
  const spec = { layers: 1, queryHeads: 2, kvHeads: 1, headDim: 8, rope: { theta: 10000 } };
  const cache = await createCache({ spec, backend: 'wasm', policy: 'streaming', options: { sinkTokens: 1, windowTokens: 8 } });
  const work = new NeedleWorkload(spec, { tokens: 16, seed: 4 });
  cache.prefill(0, work.prompt(0, 1));
  for (let t = 0; t < 3; t++) cache.decode(0, work.step(0, 1));
  const hook = vi.spyOn(cache as unknown as { attendDecode: () => unknown }, 'attendDecode').mockImplementationOnce(() => {
    throw new Error('hook failed');
  });
  expect(() => cache.decode(0, work.step(0, 1))).toThrow();
  hook.mockRestore();
  cache.decode(0, work.step(0, 1));
  expect(cache.stats().steps).toBe(4);
  cache.dispose();
});
