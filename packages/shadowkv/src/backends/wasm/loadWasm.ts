import { WasmInitError } from '../../errors/WasmInitError.js';
import type { WasmExports } from './abi.js';

/** Which build of the runtime to load: `simd` (default where the engine supports wasm SIMD) or `plain`. */
export type WasmVariant = 'simd' | 'plain';

/**
 * A compiled runtime from `compileWasm`: a `WebAssembly.Module`, typed as an opaque object so these
 * declarations need no lib with WebAssembly in it (lib `dom`; `@types/node` 20 has none). A
 * `WebAssembly.Module` passes as one, and one passes as a `WebAssembly.Module`.
 */
export type WasmModule = object;

const FILES: Record<WasmVariant, string> = { simd: 'shadowkv-simd.wasm', plain: 'shadowkv.wasm' };

// The smallest module that uses a v128 instruction: validates only where wasm SIMD exists.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

/** True when this engine validates wasm SIMD (Node >= 16.4, current browsers). */
export function hasWasmSimd(): boolean {
  return WebAssembly.validate(SIMD_PROBE);
}

/** Candidate folders for the built `.wasm`: beside the bundle (dist/wasm) or the source tree's build output. */
function candidateUrls(file: string): URL[] {
  return [new URL(`./wasm/${file}`, import.meta.url), new URL(`../../../../../runtime/wasm/out/${file}`, import.meta.url)];
}

/**
 * Node's `fs` without an import of it, static or dynamic, so a browser bundle of the SDK names no
 * Node built-in and needs no bundler flag (the build also rewrote `import('node:fs/promises')` to
 * `'fs/promises'`, which `--external:node:*` did not match); undefined outside Node.
 */
function nodeFs(): typeof import('node:fs') | undefined {
  const p = typeof process !== 'undefined' ? (process as { getBuiltinModule?: (id: string) => unknown }) : undefined;
  return p?.getBuiltinModule?.('node:fs') as typeof import('node:fs') | undefined;
}

/** Reads a file URL under Node, fetches it elsewhere (browsers, workers, Deno). */
async function readBytes(url: URL): Promise<Uint8Array> {
  const fs = nodeFs();
  if (fs) return fs.promises.readFile(url);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function notFound(variant: WasmVariant, tried: string[]): WasmInitError {
  return new WasmInitError(
    `could not find ${FILES[variant]}; looked in ${tried.join(', ')}. Build it with \`npm run build:wasm\`, or pass its bytes as \`wasmBinary\`.`,
  );
}

function compile(variant: WasmVariant, bytes: Uint8Array, sync: true): WasmModule;
function compile(variant: WasmVariant, bytes: Uint8Array, sync: false): Promise<WasmModule>;
function compile(variant: WasmVariant, bytes: Uint8Array, sync: boolean): WasmModule | Promise<WasmModule> {
  const fail = (err: unknown) => new WasmInitError(`${FILES[variant]} failed to compile: ${(err as Error).message}`);
  if (!sync) return WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>).catch((err) => Promise.reject(fail(err)));
  try {
    return new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw fail(err);
  }
}

/**
 * Compiles the runtime once; every cache instantiates its own copy (its own heap of up to 4 GB).
 * @param source bytes of a `.wasm` to use instead of the bundled one (a browser passes fetched bytes).
 */
export async function compileWasm(variant: WasmVariant = hasWasmSimd() ? 'simd' : 'plain', source?: Uint8Array): Promise<WasmModule> {
  if (source) return compile(variant, source, false);
  const tried: string[] = [];
  for (const url of candidateUrls(FILES[variant])) {
    try {
      return compile(variant, await readBytes(url), false);
    } catch (err) {
      if (err instanceof WasmInitError) throw err;
      tried.push(url.href);
    }
  }
  throw notFound(variant, tried);
}

/** The same, synchronously, where the host can read files synchronously (Node); undefined elsewhere. */
export function compileWasmSync(variant: WasmVariant = hasWasmSimd() ? 'simd' : 'plain'): WasmModule | undefined {
  const fs = nodeFs();
  if (!fs) return undefined;
  const tried: string[] = [];
  for (const url of candidateUrls(FILES[variant])) {
    let bytes: Uint8Array;
    try {
      bytes = fs.readFileSync(url);
    } catch {
      tried.push(url.href);
      continue;
    }
    return compile(variant, bytes, true);
  }
  throw notFound(variant, tried);
}

/** Instantiates a fresh runtime (its own memory) from a compiled module. */
export function instantiateWasm(module: WasmModule): WasmExports {
  const instance = new WebAssembly.Instance(module, {
    // NOTE: heap views must be re-read after any call that may grow memory; WasmHeap does.
    env: { emscripten_notify_memory_growth: () => {} },
  });
  const exports = instance.exports as unknown as WasmExports;
  exports._initialize?.();
  return exports;
}
