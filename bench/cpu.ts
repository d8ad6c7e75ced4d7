// The CPU benchmark: the runtime's hot ops natively and on wasm, then ShadowKV vs full decode steps.
// Writes bench/results/cpu.json and prints a table. Run through `npm run bench:cpu` (bench/cpu.sh
// builds what is missing first), or `npx tsx bench/cpu.ts` once both builds exist.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolveBackend } from '../packages/shadowkv/src/backend.js';
import { benchDecodeStep, type DecodeTiming, type SdkUnderTest } from './decodeStep.bench.js';
import { benchOps, type OpTiming } from './ops.bench.js';
import { cli } from '../examples/cli.js';

// No flags (BENCH_COMPARE=<checkout>[:label] adds another build): anything else is refused, not ignored.
cli('bench/cpu', 'the runtime ops natively and on wasm, then ShadowKV against full decode steps; writes bench/results/cpu.json', {});

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NATIVE = `${ROOT}bench/native/out/bench_ops`;
const OUT = `${ROOT}bench/results/cpu.json`;
// Native and wasm op timings alternate for this many rounds; each side keeps its best median, so a
// burst of load from elsewhere on the machine does not land on one side only.
const ROUNDS = 3;
// The issue's targets.
const KERNEL_RATIO_TARGET = 1.5;
const SPEEDUP_TARGET_128K = 3;

const start = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - start) / 1000).toFixed(1).padStart(6)} s] ${line}`);

function nativeOps(): OpTiming[] {
  if (!existsSync(NATIVE)) throw new Error(`${NATIVE} is missing; build it with \`bash bench/native/build.sh\` (or run \`npm run bench:cpu\`)`);
  const stdout = execFileSync(NATIVE, { encoding: 'utf8' });
  return stdout.trim().split('\n').map((line) => JSON.parse(line) as OpTiming);
}

function emccVersion(): string | null {
  try {
    return execFileSync('emcc', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]!.trim();
  } catch {
    return null; // not needed to run the benchmark, only to build the wasm
  }
}

const best = (runs: OpTiming[][], op: string) => Math.min(...runs.map((r) => r.find((t) => t.op === op)!.ms));

async function main(): Promise<void> {
  const loadBefore = os.loadavg(); // other work on the machine shows up here, and in the timings
  const { backend } = await resolveBackend('wasm');
  const nativeRuns: OpTiming[][] = [];
  const wasmRuns: OpTiming[][] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    log(`ops round ${r}/${ROUNDS}: native (${NATIVE.slice(ROOT.length)})`);
    nativeRuns.push(nativeOps());
    log(`ops round ${r}/${ROUNDS}: wasm (${backend.description})`);
    wasmRuns.push(await benchOps());
  }
  const ops = nativeRuns[0]!.map(({ op, shape }) => {
    const native_ms = best(nativeRuns, op);
    const wasm_ms = best(wasmRuns, op);
    return { op, shape, native_ms, wasm_ms, ratio: wasm_ms / native_ms };
  });

  // BENCH_COMPARE=<checkout>[:label] also times another build of the SDK in the same decode loop.
  const [comparePath, compareLabel] = (process.env.BENCH_COMPARE ?? '').split(':');
  const compare = comparePath
    ? { label: compareLabel ?? comparePath, sdk: (await import(pathToFileURL(`${comparePath}/packages/shadowkv/src/index.ts`).href)) as SdkUnderTest }
    : undefined;
  const decode: DecodeTiming[] = await benchDecodeStep({ log, compare });

  const worst = ops.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  const at128k = decode.find((d) => d.context === 131072 && d.batch === 1);
  const result = {
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      loadAverage: { before: loadBefore.map((x) => +x.toFixed(2)), after: os.loadavg().map((x) => +x.toFixed(2)) },
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      os: `${os.type()} ${os.release()}`,
      node: process.version,
      emcc: emccVersion(),
      wasm: backend.description,
      native: 'g++ -O3 -march=native -ffp-contract=fast (bench/native/build.sh), same sources; simd.h GCC-vector path (128-bit f32x4)',
    },
    command: process.env.BENCH_COMMAND ?? 'npx tsx bench/cpu.ts',
    method: `ops: one warm-up then the median of >= max(minReps, 0.3 s worth) calls; native and wasm alternate for ${ROUNDS} rounds, each keeps its lowest median. decode: ${decode[0]?.steps.warmup} warm-up steps of each cache, then ${decode[0]?.steps.timed} timed steps interleaved ShadowKV, full, ShadowKV, full...; median ms per step`,
    ops,
    opRounds: { native: nativeRuns, wasm: wasmRuns },
    decode,
    targets: {
      kernelsWithin1_5x: { met: worst.ratio <= KERNEL_RATIO_TARGET, worstOp: worst.op, worstRatio: worst.ratio, over: ops.filter((o) => o.ratio > KERNEL_RATIO_TARGET).map((o) => o.op) },
      shadowkv3xAt128k: { met: (at128k?.speedup ?? 0) >= SPEEDUP_TARGET_128K, speedup: at128k?.speedup ?? null },
    },
  };
  mkdirSync(`${ROOT}bench/results`, { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  printTables(result.ops, decode);
  console.log(`\ntargets: wasm kernels within ${KERNEL_RATIO_TARGET}x of native: ${result.targets.kernelsWithin1_5x.met ? 'met' : `missed (${result.targets.kernelsWithin1_5x.over.join(', ')}; worst ${worst.op} ${worst.ratio.toFixed(2)}x)`}`);
  console.log(`         ShadowKV >= ${SPEEDUP_TARGET_128K}x faster than full at 128K: ${result.targets.shadowkv3xAt128k.met ? 'met' : 'missed'} (${at128k?.speedup.toFixed(2)}x)`);
  log(`wrote ${OUT.slice(ROOT.length)}`);
}

const MB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;

function printTables(ops: { op: string; shape: string; native_ms: number; wasm_ms: number; ratio: number }[], decode: DecodeTiming[]): void {
  console.log('\nop                native ms   wasm ms   wasm/native   shape');
  for (const o of ops) {
    console.log(`${o.op.padEnd(17)} ${o.native_ms.toFixed(3).padStart(9)} ${o.wasm_ms.toFixed(3).padStart(9)} ${o.ratio.toFixed(2).padStart(10)}x   ${o.shape}`);
  }
  console.log('\ncontext x batch  shadowkv ms/step  full ms/step  speedup  hit rate  needle  cosine  rel.err   prefill s (skv / full)  device skv / full   host skv  dense');
  for (const d of decode) {
    const m = d.memory;
    console.log(
      `${`${d.context / 1024}K x ${d.batch}`.padEnd(15)} ${d.shadowkv_ms.toFixed(2).padStart(16)} ${d.full_ms.toFixed(2).padStart(13)} ${`${d.speedup.toFixed(2)}x`.padStart(8)} ` +
        `${d.hitRate.toFixed(3).padStart(9)} ${(d.needleSelected ? 'yes' : 'NO').padStart(7)} ${d.cosine.toFixed(4).padStart(7)} ${d.relError.toFixed(3).padStart(8)} ` +
        `${`${(d.prefill_ms.shadowkv / 1000).toFixed(1)} / ${(d.prefill_ms.full / 1000).toFixed(1)}`.padStart(23)} ` +
        `${`${MB(m.shadowkv.device)} / ${MB(m.full.device)}`.padStart(19)} ${MB(m.shadowkv.host).padStart(10)} ${MB(m.full.dense).padStart(6)}`,
    );
  }
}

await main();
