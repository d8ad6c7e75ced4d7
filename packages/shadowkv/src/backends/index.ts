// Registers the built-in backends, best first: cuda (optional package), then wasm.
import { createCudaBackend } from './cuda.js';
import { registerBackend } from './registry.js';
import { createWasmBackend, createWasmBackendSync } from './wasm/WasmBackend.js';

registerBackend('cuda', createCudaBackend, 2);
registerBackend('wasm', () => createWasmBackend(), 1, { sync: createWasmBackendSync });
