import { WasmInitError } from '../../errors/WasmInitError.js';
import type { WasmExports } from './abi.js';

/** Which build of the runtime to load: `simd` (default where the engine supports wasm SIMD) or `plain`. */
export type WasmVariant = 'simd' | 'plain';

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

/** Reads a file URL under Node, fetches it elsewhere (browsers, workers, Deno). */
async function readBytes(url: URL): Promise<Uint8Array> {
  if (typeof process !== 'undefined' && process.versions?.node) {
    // NOTE: imported here, not at the top, so browser bundles never see node:fs.
    const { readFile } = await import('node:fs/promises');
    return readFile(url);
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Compiles the runtime once; every cache instantiates its own copy (its own heap of up to 4 GB).
 * @param source bytes of a `.wasm` to use instead of the bundled one (a browser passes fetched bytes).
 */
export async function compileWasm(variant: WasmVariant = hasWasmSimd() ? 'simd' : 'plain', source?: Uint8Array): Promise<WebAssembly.Module> {
  let bytes = source;
  const tried: string[] = [];
  for (const url of source ? [] : candidateUrls(FILES[variant])) {
    try {
      bytes = await readBytes(url);
      break;
    } catch {
      tried.push(url.href);
    }
  }
  if (!bytes) {
    throw new WasmInitError(
      `could not find ${FILES[variant]}; looked in ${tried.join(', ')}. Build it with \`npm run build:wasm\`, or pass its bytes as \`wasmBinary\`.`,
    );
  }
  try {
    return await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw new WasmInitError(`${FILES[variant]} failed to compile: ${(err as Error).message}`);
  }
}

/** Instantiates a fresh runtime (its own memory) from a compiled module. */
export function instantiateWasm(module: WebAssembly.Module): WasmExports {
  const instance = new WebAssembly.Instance(module, {
    // NOTE: heap views must be re-read after any call that may grow memory; WasmHeap does.
    env: { emscripten_notify_memory_growth: () => {} },
  });
  const exports = instance.exports as unknown as WasmExports;
  exports._initialize?.();
  return exports;
}
