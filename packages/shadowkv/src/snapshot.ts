import { Packr } from 'msgpackr';
import { detachedNote, ownView, typedKind } from './dtype.js';
import { SnapshotError } from './errors/SnapshotError.js';

/** Snapshot format version; bump when the content layout changes. */
export const SNAPSHOT_VERSION = 2;
const FORMAT = 'shadowkv-snapshot';

// NOTE: moreTypes keeps typed arrays typed (otherwise they decode as Buffer).
const packr = new Packr({ moreTypes: true, structuredClone: false, useRecords: false });

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE) of bytes. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Packs snapshot content into a versioned, checksummed envelope. */
export function encodeSnapshot(content: Record<string, unknown>): Uint8Array {
  // NOTE: pack() returns a view into msgpackr's shared buffer: each result is copied out before the next pack.
  const payload = new Uint8Array(packr.pack(content));
  return new Uint8Array(packr.pack({ format: FORMAT, version: SNAPSHOT_VERSION, crc32: crc32(payload), payload }));
}

/**
 * The first value `bytes` holds and the byte where it ends. NOTE: not packr.unpack, whose error for
 * bytes past the value JSON-stringifies the whole decoded value for its message: a 48 MiB snapshot
 * with one byte appended took 65 s and 3.7 GiB to be refused.
 */
function unpackFirst(bytes: Uint8Array, what: string): { value: unknown; end: number } {
  let value: unknown, end = 0;
  try {
    packr.unpackMultiple(bytes, (v: unknown, _start?: number, stop?: number) => {
      value = v;
      end = stop ?? 0;
      return false;
    });
  } catch (err) {
    throw new SnapshotError(`loadCache: ${what} does not decode: not a shadowkv snapshot, or truncated (${(err as Error).message})`);
  }
  return { value, end };
}

/** Refuses bytes past the value that ends at `end`. */
function wholly(bytes: Uint8Array, end: number, what: string): void {
  if (end !== bytes.length) throw new SnapshotError(`loadCache: ${what} ends at byte ${end} of ${bytes.length}: the snapshot was altered or has bytes appended`);
}

/** Opens an envelope: checks format, version and checksum, returns the content. Throws `SnapshotError`. */
export function decodeSnapshot(input: Uint8Array): Record<string, unknown> {
  // By the internal slot, not instanceof: save()'s bytes passed through another realm (a vm context,
  // jsdom) are a Uint8Array too. A plain view of them: the decoder reads byteOffset and length.
  if (typedKind(input) !== 'Uint8Array') throw new SnapshotError('loadCache: expected the Uint8Array that save() returned');
  const detached = detachedNote(input);
  if (detached) throw new SnapshotError(`loadCache: the snapshot's bytes hold nothing${detached}`);
  const bytes = ownView(input, Uint8Array);
  const { value, end } = unpackFirst(bytes, 'the snapshot');
  const envelope = value as { format?: unknown; version?: unknown; crc32?: unknown; payload?: unknown } | null;
  if (!envelope || typeof envelope !== 'object' || envelope.format !== FORMAT) {
    throw new SnapshotError(`loadCache: not a shadowkv snapshot (format is ${describe(envelope?.format)})`);
  }
  wholly(bytes, end, 'the snapshot');
  if (envelope.version !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`loadCache: snapshot format version ${describe(envelope.version)} is not supported (this build reads version ${SNAPSHOT_VERSION})`);
  }
  const payload = envelope.payload;
  if (!(payload instanceof Uint8Array)) throw new SnapshotError('loadCache: snapshot has no payload');
  const sum = crc32(payload);
  if (sum !== envelope.crc32) throw new SnapshotError(`loadCache: checksum mismatch (stored ${describe(envelope.crc32)}, computed ${sum}): the snapshot was altered or truncated`);
  const content = unpackFirst(payload, 'the snapshot payload');
  wholly(payload, content.end, 'the snapshot payload');
  if (!content.value || typeof content.value !== 'object' || Array.isArray(content.value)) throw new SnapshotError('loadCache: the snapshot payload is not a record');
  return content.value as Record<string, unknown>;
}

/** A stored field for a message: strings quoted, so that "2" and 2 read apart. */
function describe(v: unknown): string {
  return typeof v === 'bigint' ? `${v}n` : (JSON.stringify(v) ?? String(v)).slice(0, 80);
}
