import { Packr } from 'msgpackr';
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

/** Opens an envelope: checks format, version and checksum, returns the content. Throws `SnapshotError`. */
export function decodeSnapshot(bytes: Uint8Array): Record<string, unknown> {
  if (!(bytes instanceof Uint8Array)) throw new SnapshotError('loadCache: expected the Uint8Array that save() returned');
  let envelope: { format?: unknown; version?: unknown; crc32?: unknown; payload?: unknown };
  try {
    envelope = packr.unpack(bytes) as typeof envelope;
  } catch (err) {
    throw new SnapshotError(`loadCache: not a shadowkv snapshot, or truncated (${(err as Error).message})`);
  }
  if (!envelope || envelope.format !== FORMAT) throw new SnapshotError(`loadCache: not a shadowkv snapshot (format is ${JSON.stringify(envelope?.format)})`);
  if (envelope.version !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`loadCache: snapshot format version ${String(envelope.version)} is not supported (this build reads version ${SNAPSHOT_VERSION})`);
  }
  const payload = envelope.payload;
  if (!(payload instanceof Uint8Array)) throw new SnapshotError('loadCache: snapshot has no payload');
  const sum = crc32(payload);
  if (sum !== envelope.crc32) throw new SnapshotError(`loadCache: checksum mismatch (stored ${String(envelope.crc32)}, computed ${sum}): the snapshot was altered or truncated`);
  try {
    return packr.unpack(payload) as Record<string, unknown>;
  } catch (err) {
    throw new SnapshotError(`loadCache: snapshot payload does not decode (${(err as Error).message})`);
  }
}
