// The decode-step part of `npm run bench:cpu` alone, optionally beside another checkout of the SDK
// (e.g. the previous commit's, its wasm built) whose caches take the same steps in the same loop:
//   npx tsx bench/decodeOnly.ts out.json [<other checkout> [<its label>]] [--warmup 10] [--timed 30]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { cli, refuseRetiredEnv } from '../examples/cli.js';
import { benchDecodeStep, type SdkUnderTest } from './decodeStep.bench.js';

const { out, other: otherPath, label: otherLabel, warmup, timed } = cli('bench/decodeOnly', "the decode-step part of npm run bench:cpu, optionally beside another checkout's SDK", {
  out: { kind: 'arg', doc: 'the JSON to write' },
  other: { kind: 'arg', optional: true, doc: "another checkout (its wasm built), timed in the same loop" },
  label: { kind: 'arg', optional: true, doc: "the other checkout's label (default its path)" },
  warmup: { kind: 'int', default: 10, min: 0, max: 1 << 20, doc: 'warm-up steps of each cache' },
  timed: { kind: 'int', default: 30, min: 1, max: 1 << 20, doc: 'timed steps of each cache' },
});
refuseRetiredEnv('bench/decodeOnly', { BENCH_WARMUP: '--warmup', BENCH_TIMED: '--timed' });
const start = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);
const compare = otherPath
  ? { label: otherLabel ?? otherPath, sdk: (await import(pathToFileURL(`${otherPath}/packages/shadowkv/src/index.ts`).href)) as SdkUnderTest }
  : undefined;
const decode = await benchDecodeStep({ log, compare, warmup, timed });
const machine = { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, loadAverage: os.loadavg() };
writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), machine, command: `npx tsx bench/decodeOnly.ts ${process.argv.slice(2).join(' ')}`, decode }, null, 2)}\n`);
