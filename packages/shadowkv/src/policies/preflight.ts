import type { Device, DeviceRoom } from '../backends/Device.js';
import { OutOfMemoryError } from '../errors/OutOfMemoryError.js';

/** Bytes a cache needs: device (after prefill, the tail at its largest), transient (one row compressing), host. */
export interface MemoryNeed {
  device: number;
  transient: number;
  host: number;
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/** What a device can still allocate: its own answer, else its `maxBytes` less what it holds (both tiers one pool), else unknown. */
export function deviceRoom(device: Device): DeviceRoom | undefined {
  if (device.room) return device.room();
  if (device.maxBytes === undefined) return undefined;
  const held = device.memory();
  const left = Math.max(0, device.maxBytes - held.device - held.host);
  return { device: left, host: left, shared: true, source: `the ${device.backend} backend (${gib(device.maxBytes)} for both tiers)` };
}

/** Whether `need` fits `room`: tier by tier, or in sum where the tiers share one pool. */
export function fitsRoom(need: MemoryNeed, room: DeviceRoom): boolean {
  const device = need.device + need.transient;
  return room.shared ? device + need.host <= room.device : device <= room.device && need.host <= room.host;
}

/** The largest n in [1, hi] with `ok(n)` (assumed to hold for every smaller n), or 0. */
function largest(hi: number, ok: (n: number) => boolean): number {
  let [lo, top] = [0, hi];
  while (lo < top) {
    const mid = Math.ceil((lo + top) / 2);
    [lo, top] = ok(mid) ? [mid, top] : [lo, mid - 1];
  }
  return lo;
}

/**
 * The creation preflight: throws `OutOfMemoryError` (before anything is allocated) when `batch`
 * rows of `maxTokens` tokens each, as `estimate` sizes them, do not fit `room`. The message names
 * both sides and what would fit: a smaller maxTokens at this batch, a smaller batch at this
 * maxTokens, and (when the device tier is short) the policy options that size it (`knobs`).
 */
export function preflight(what: string, size: { batch: number; maxTokens: number }, estimate: (batch: number, tokens: number) => MemoryNeed, room: DeviceRoom, knobs = ''): void {
  const { batch, maxTokens } = size;
  const need = estimate(batch, maxTokens);
  if (fitsRoom(need, room)) return;
  const tokens = largest(maxTokens - 1, (t) => fitsRoom(estimate(batch, t), room));
  const rows = largest(batch - 1, (b) => fitsRoom(estimate(b, maxTokens), room));
  const device = need.device + need.transient;
  const has = room.shared ? `${gib(room.device)} free for both` : `${gib(room.device)} device and ${gib(room.host)} host free`;
  const fixes = [tokens > 0 ? `maxTokens ${tokens} at batch ${batch}` : '', rows > 0 ? `batch ${rows} at maxTokens ${maxTokens}` : ''].filter(Boolean);
  const deviceShort = room.shared || device > room.device;
  throw new OutOfMemoryError(
    `${what}: batch ${batch} x maxTokens ${maxTokens} needs ${gib(device)} of device memory` +
      `${need.transient ? ` (${gib(need.transient)} of it at a peak: one row compressing, or one row's tail growing)` : ''} and ${gib(need.host)} of host memory` +
      `${room.shared ? ` (${gib(device + need.host)} in all)` : ''}; ${room.source} has ${has}. ` +
      `${fixes.length ? `What fits: ${fixes.join(', or ')}` : 'Not one token of one row fits'}` +
      `${knobs && deviceShort ? `; or lower ${knobs}` : ''}. Nothing was allocated`,
    { device, transient: need.transient, host: need.host, available: { device: room.device, host: room.host, shared: room.shared ?? false } },
  );
}
