import { SnapshotError } from '../errors/SnapshotError.js';
import type { DType, TensorData } from '../tensor.js';
import { checkValues } from './validate.js';

// Checks of snapshot content before anything is restored: every field's type, length and range,
// named by its path in the message (`layers[3][1].store.heads[0].landmarkIds`).

/** Throws `SnapshotError` naming `path` unless `ok`. */
export function need(ok: boolean, path: string, what: string): asserts ok {
  if (!ok) throw new SnapshotError(`loadCache: ${path} ${what}`);
}

/** A plain object holding exactly `keys` (an optional key may be absent). */
export function record(v: unknown, path: string, keys: readonly string[], optional: readonly string[] = []): Record<string, unknown> {
  need(v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v), path, 'must be an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) need(keys.includes(k) || optional.includes(k), `${path}.${k}`, 'is not a field of this snapshot format');
  for (const k of keys) need(k in o, `${path}.${k}`, 'is missing');
  return o;
}

/** An integer in `[min, max]`. */
export function int(v: unknown, path: string, min: number, max: number): number {
  need(Number.isInteger(v) && (v as number) >= min && (v as number) <= max, path, `must be an integer in [${min}, ${max}], got ${typeof v === 'number' ? v : typeof v}`);
  return v as number;
}

/** Stored elements of `dtype` (the host array type of the storage dtype), `length` of them, finite and within the dtype's range. */
export function stored(v: unknown, path: string, dtype: DType, length: number): TensorData {
  const Want = dtype === 'f32' ? Float32Array : Uint16Array;
  need(v instanceof Want, path, `must be a ${Want.name} (storage dtype '${dtype}'), got ${v?.constructor?.name ?? typeof v}`);
  need((v as TensorData).length === length, path, `must hold ${length} elements, got ${(v as TensorData).length}`);
  try {
    checkValues(path, 'data', { data: v as TensorData, shape: [length], dtype }, dtype, 'value');
  } catch (err) {
    throw new SnapshotError(`loadCache: ${(err as Error).message}`);
  }
  return v as TensorData;
}

/** Chunk ids: an Int32Array of at most `max` ids in `[0, chunks)`, strictly ascending when `ascending`, distinct always. */
export function ids(v: unknown, path: string, max: number, chunks: number, ascending: boolean): Int32Array {
  need(v instanceof Int32Array, path, `must be an Int32Array, got ${v?.constructor?.name ?? typeof v}`);
  const a = v as Int32Array;
  need(a.length <= max, path, `holds ${a.length} ids, more than ${max}`);
  const seen = new Set<number>();
  a.forEach((c, i) => {
    need(c >= 0 && c < chunks, `${path}[${i}]`, `is ${c}, outside [0, ${chunks})`);
    need(!seen.has(c), `${path}[${i}]`, `repeats chunk ${c}`);
    need(!ascending || i === 0 || c > a[i - 1]!, `${path}[${i}]`, 'breaks the ascending order');
    seen.add(c);
  });
  return a;
}
