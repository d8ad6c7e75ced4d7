import { spawn } from 'node:child_process';
import type { CudaDeviceInfo } from './AddonTypes.js';

/** What the probe child found. `stage` says how far it got: `'ok'`, or the step that failed. */
export interface ProbeResult {
  stage: 'ok' | 'load' | 'deviceCount' | 'deviceInfo' | 'selfTest' | 'crash' | 'timeout' | 'spawn';
  /** Devices visible (stage 'ok'). */
  count?: number;
  devices?: CudaDeviceInfo[];
  message?: string;
  /** The CUDA error of a failed step (35: no driver, 100: no device, 209: no kernel image, ...). */
  cudaCode?: number;
}

/**
 * The child's program (CommonJS, run with `node -e`): load the addon, count devices, describe
 * them, run one kernel on the chosen one, answer over IPC and exit. It is a string so that the
 * child needs no TypeScript loader, whatever runs the parent (vitest, tsx, a bundle).
 */
const CHILD = `(() => {
  const send = (m) => process.send(m, () => process.exit(0));
  const fail = (stage, e) => send({ stage, message: String((e && e.message) || e), cudaCode: e && e.cudaCode });
  let addon;
  try { addon = require(process.env.SHADOWKV_CUDA_PROBE); } catch (e) { return fail('load', e); }
  let count;
  try { count = addon.deviceCount(); } catch (e) { return fail('deviceCount', e); }
  const devices = [];
  for (let i = 0; i < count; i++) {
    try { devices.push(addon.deviceInfo(i)); } catch (e) { return fail('deviceInfo', e); }
  }
  const ordinal = Number(process.env.SHADOWKV_CUDA_PROBE_DEVICE || 0);
  if (ordinal < count) {
    try { addon.selfTest(ordinal); } catch (e) { return fail('selfTest', e); }
  }
  send({ stage: 'ok', count, devices });
})();`;

const probes = new Map<string, Promise<ProbeResult>>();

/**
 * Loads the addon at `path` in a child process first (node-llama-cpp's testBindingBinary): the
 * child calls `deviceCount()`, reads each device's properties, runs a tiny kernel on `ordinal`
 * and answers over IPC. A crash or a hang (past `timeoutMs`) costs the child, not this process.
 * Memoized per path and device.
 */
export function probeAddon(path: string, ordinal = 0, timeoutMs = 60_000): Promise<ProbeResult> {
  const key = `${path}#${ordinal}`;
  let p = probes.get(key);
  if (!p) {
    p = runProbe(path, ordinal, timeoutMs);
    probes.set(key, p);
  }
  return p;
}

function runProbe(path: string, ordinal: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    let stderr = '';
    const finish = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const child = spawn(process.execPath, ['-e', CHILD], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, SHADOWKV_CUDA_PROBE: path, SHADOWKV_CUDA_PROBE_DEVICE: String(ordinal) },
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ stage: 'timeout', message: `the probe did not answer within ${timeoutMs / 1000} s` });
    }, timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 8192) stderr += chunk.toString();
    });
    child.on('message', (m) => finish(m as ProbeResult));
    child.on('error', (err) => finish({ stage: 'spawn', message: err.message }));
    // NOTE: 'close' comes after the IPC channel has delivered everything, so an answer wins over it.
    child.on('close', (code, signal) => {
      const tail = stderr.trim().split('\n').slice(-3).join(' | ');
      finish({ stage: 'crash', message: `the probe exited (${signal ?? `code ${code}`}) without answering${tail ? `: ${tail}` : ''}` });
    });
  });
}
