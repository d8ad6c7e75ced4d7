// The decode-step part of `npm run bench:cpu` alone, optionally beside another checkout of the SDK
// (e.g. the previous commit's, its wasm built) whose caches take the same steps in the same loop:
//   npx tsx bench/decodeOnly.ts out.json [<other checkout> <its label>]
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { benchDecodeStep, type SdkUnderTest } from './decodeStep.bench.js';

const [out, otherPath, otherLabel] = process.argv.slice(2);
if (!out) throw new Error('usage: npx tsx bench/decodeOnly.ts out.json [<other checkout> <its label>]');
const start = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);
const compare = otherPath
  ? { label: otherLabel ?? otherPath, sdk: (await import(pathToFileURL(`${otherPath}/packages/shadowkv/src/index.ts`).href)) as SdkUnderTest }
  : undefined;
const warmup = Number(process.env.BENCH_WARMUP ?? 10), timed = Number(process.env.BENCH_TIMED ?? 30);
const decode = await benchDecodeStep({ log, compare, warmup, timed });
const machine = { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, loadAverage: os.loadavg() };
writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), machine, command: `npx tsx bench/decodeOnly.ts ${process.argv.slice(2).join(' ')}`, decode }, null, 2)}\n`);
