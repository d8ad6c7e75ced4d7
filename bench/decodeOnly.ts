// The decode-step part of `npm run bench:cpu` alone, to compare two versions side by side:
//   npx tsx bench/decodeOnly.ts out.json <label>
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { benchDecodeStep } from './decodeStep.bench.js';
const start = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);
const decode = await benchDecodeStep({ log });
writeFileSync(process.argv[2]!, JSON.stringify({ date: new Date().toISOString(), commit: process.argv[3], cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, decode }, null, 2) + '\n');
