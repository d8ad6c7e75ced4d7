import { WasmInitError } from '../../errors/WasmInitError.js';
import { DETACHED, isDetached } from '../../dtype.js';
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

/** Reads a file URL under Node, fetches it elsewhere (browsers, workers, Deno); an Error names why it could not. */
async function readBytes(url: URL): Promise<Uint8Array> {
  const fs = nodeFs();
  if (fs) return fs.promises.readFile(url);
  let response: Response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`fetch failed: ${(err as Error)?.message ?? String(err)}`); // offline, CORS, a blocked URL
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`);
  return new Uint8Array(await response.arrayBuffer());
}

function notFound(variant: WasmVariant, tried: string[]): WasmInitError {
  // Under Node the file is missing from the build; elsewhere the page's server did not hand it out.
  const fix = nodeFs()
    ? 'Build it with `npm run build:wasm`'
    : `Serve node_modules/shadowkv/dist/wasm/ as wasm/ beside your bundle (${FILES[variant]} as application/wasm)`;
  return new WasmInitError(`could not load ${FILES[variant]}; tried ${tried.join(', ')}. ${fix}, or pass its bytes as \`wasmBinary\`.`);
}

const WASM_MAGIC = [0, 0x61, 0x73, 0x6d];

/** Why an engine refused `bytes`, in words that say what to do: not wasm, a blocked compile (CSP), or damaged. */
function whyRefused(bytes: Uint8Array, err: unknown): string {
  const message = (err as Error)?.message ?? String(err);
  if (bytes.length === 0) return 'there are none';
  if (WASM_MAGIC.some((b, i) => bytes[i] !== b)) {
    const head = new TextDecoder().decode(bytes.subarray(0, 16)).replace(/[^\x20-\x7e]/g, '.');
    const html = head.trimStart().startsWith('<') ? ' (HTML: most likely a server\'s page for a missing file)' : '';
    return `not a .wasm file: it begins with "${head}"${html}`;
  }
  // NOTE: validating compiles no code, so a Content-Security-Policy does not block it; compiling does.
  if (WebAssembly.validate(bytes as Uint8Array<ArrayBuffer>) || /content.security.policy|\bcsp\b|unsafe-eval/i.test(message)) {
    return `the engine refused to compile a valid module (${message}): a Content-Security-Policy blocks WebAssembly unless script-src allows 'wasm-unsafe-eval'; add it`;
  }
  return `${bytes.length} bytes, truncated or corrupt (${message}); serve or pass the file whole and unmodified`;
}

function compile(variant: WasmVariant, bytes: Uint8Array, source: string, sync: true): WasmModule;
function compile(variant: WasmVariant, bytes: Uint8Array, source: string, sync: false): Promise<WasmModule>;
function compile(variant: WasmVariant, bytes: Uint8Array, source: string, sync: boolean): WasmModule | Promise<WasmModule> {
  const fail = (err: unknown) => new WasmInitError(`${FILES[variant]} failed to compile (bytes from ${source}): ${whyRefused(bytes, err)}`);
  if (!sync) return WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>).catch((err) => Promise.reject(fail(err)));
  try {
    return new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw fail(err);
  }
}

/** `wasmBinary` as bytes: a Uint8Array or any other view, or an ArrayBuffer (shared or not), not detached. */
function binaryBytes(source: unknown): Uint8Array {
  const view = ArrayBuffer.isView(source);
  if (!view && !isBuffer(source)) {
    throw new WasmInitError(`wasmBinary must be the .wasm's bytes (a Uint8Array or an ArrayBuffer), got ${Object.prototype.toString.call(source)}; from fetch: new Uint8Array(await response.arrayBuffer())`);
  }
  const buffer = view ? source.buffer : source;
  if (isDetached(buffer)) throw new WasmInitError(`wasmBinary holds no bytes: ${DETACHED}`);
  return view ? new Uint8Array(buffer, source.byteOffset, source.byteLength) : new Uint8Array(buffer);
}

// By the tag, not instanceof: an ArrayBuffer of another realm (a vm context, an iframe) is one too.
const isBuffer = (v: unknown): v is ArrayBufferLike => /^\[object (Shared)?ArrayBuffer\]$/.test(Object.prototype.toString.call(v));

/**
 * Compiles the runtime once; every cache instantiates its own copy (its own heap of up to 4 GB).
 * @param source bytes of a `.wasm` to use instead of the bundled one (a browser passes fetched bytes): a
 *   Uint8Array (any view) or an ArrayBuffer; anything else, or a detached buffer, is a `WasmInitError`.
 */
export async function compileWasm(variant: WasmVariant = hasWasmSimd() ? 'simd' : 'plain', source?: Uint8Array | ArrayBuffer): Promise<WasmModule> {
  if (source !== undefined) return compile(variant, binaryBytes(source), 'wasmBinary', false);
  const tried: string[] = [];
  for (const url of candidateUrls(FILES[variant])) {
    let bytes: Uint8Array;
    try {
      bytes = await readBytes(url);
    } catch (err) {
      tried.push(`${url.href} (${(err as Error)?.message ?? String(err)})`);
      continue;
    }
    return compile(variant, bytes, url.href, false);
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
    } catch (err) {
      tried.push(`${url.href} (${(err as { code?: string })?.code ?? (err as Error)?.message})`);
      continue;
    }
    return compile(variant, bytes, url.href, true);
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
