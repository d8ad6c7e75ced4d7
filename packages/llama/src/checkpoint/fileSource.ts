// Positioned reads of a checkpoint file (Node): a shard is read a header and a tensor at a time, so
// its size is not bounded by one buffer (readFileSync stops at 2 GiB; real shards are ~5 GB).
import type * as Fs from 'node:fs';
import { CheckpointError } from '../errors/CheckpointError.js';
import type { ByteSource } from './safetensors.js';

// One read(2) moves at most ~2 GiB (Node's kIoMaxLength); a larger range is read in pieces of this.
const MAX_READ = 2 ** 30;

/** The file open as `fd` as a `ByteSource`; `path` names it in errors. The caller closes `fd`. */
export function fileSource(fs: typeof Fs, fd: number, path: string): ByteSource {
  const size = fs.fstatSync(fd).size;
  return {
    size,
    read(offset, length) {
      let out: Uint8Array;
      try {
        out = new Uint8Array(length);
      } catch (err) {
        throw new CheckpointError('io', `${path}: ${length} bytes from byte ${offset} do not fit in one array (${(err as Error).message})`);
      }
      for (let done = 0; done < length; ) {
        let n: number;
        try {
          n = fs.readSync(fd, out, done, Math.min(length - done, MAX_READ), offset + done);
        } catch (err) {
          throw new CheckpointError('io', `${path}: reading ${length} bytes from byte ${offset}: ${(err as Error).message}`);
        }
        if (n === 0) throw new CheckpointError('truncated', `${path}: the file ended at byte ${offset + done} while reading ${length} bytes from byte ${offset} (did it change while loading?)`);
        done += n;
      }
      return out;
    },
  };
}
