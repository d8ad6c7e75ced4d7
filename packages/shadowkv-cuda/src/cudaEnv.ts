// The environment variables the CUDA backend and its addon read (kernels/*.cu, kernels/*.h,
// runtime/cuda/binding.cc), with the values each takes. The native code reads a value it does not
// know as its default ("false" left a switch on, "abc" a count at 0): createCudaBackend checks them
// all first, so that a typo is a ConfigError naming the variable instead of a silent default.
import { fmt } from '../../shadowkv/src/config.js';
import { ConfigError } from '../../shadowkv/src/errors/ConfigError.js';

const INT32_MAX = 2 ** 31 - 1;

interface EnvRule {
  /** The accepted values, for the message. */
  takes: string;
  /** Whether the native code reads `value` as documented (empty reads as unset where it says so). */
  ok(value: string): boolean;
}

const oneOf = (takes: string, ...values: string[]): EnvRule => ({ takes, ok: (v) => values.includes(v) });
/** A default-on switch of the kernels (skv_env_off: only "0" turns it off). */
const SWITCH = oneOf('0 (off) or 1 (on, the default)', '', '0', '1');
/** Digits only, at most INT32_MAX. */
const int32 = (v: string) => /^\d{1,10}$/.test(v) && Number(v) <= INT32_MAX;
/** A count the step record or the kernels take as an int32; 0 (or unset) lets the kernels choose. */
const COUNT: EnvRule = {
  takes: `a count in [0, ${INT32_MAX}] (the kernels read it as an int32)`,
  ok: (v) => v.trim() === '' || int32(v.trim()),
};

/** Every variable, with what it takes (docs/cuda.md says what each does). */
export const CUDA_ENV: Readonly<Record<string, EnvRule>> = {
  // Read by createCudaBackend, not the addon: the device when the `device` option is not given.
  SHADOWKV_CUDA_DEVICE: {
    takes: `a CUDA device ordinal in [0, ${INT32_MAX}] (the device when createCudaBackend has no \`device\` option)`,
    ok: (v) => v === '' || int32(v),
  },
  SHADOWKV_CUDA_SYNC: oneOf('0 (ops queue, the default) or 1 (every op waits for its kernels)', '', '0', '1'),
  SHADOWKV_CUDA_PDL: SWITCH,
  SHADOWKV_CUDA_GRAPHS: SWITCH,
  SHADOWKV_CUDA_FETCH_SPLIT: SWITCH,
  SHADOWKV_CUDA_SELECT_NEAR: SWITCH,
  SHADOWKV_CUDA_APPEND_FOLD: SWITCH,
  SHADOWKV_CUDA_LANDED: SWITCH,
  SHADOWKV_CUDA_IDLE_UPLOAD: SWITCH,
  // Read by CudaDevice, not the addon: host-array steps' inputs staged in one pass, their outputs written to pinned memory.
  SHADOWKV_CUDA_STAGE: SWITCH,
  SHADOWKV_CUDA_MAPPED_OUT: SWITCH,
  SHADOWKV_CUDA_DENSE: oneOf('0 (the composed attention) or 1 (the dense attention, refusing a step it cannot take); unset: dense where it fits', '', '0', '1'),
  SHADOWKV_CUDA_REBUILD: oneOf("simt (the key rebuild without tensor cores); unset: tensor cores where d allows", '', 'simt'),
  SHADOWKV_CUDA_FETCH_GRID: COUNT,
  SHADOWKV_CUDA_LOGIT_SPLIT: COUNT,
  SHADOWKV_CUDA_SELECT_BLOCKS: COUNT,
  SHADOWKV_CUDA_STEP_GROUPS: COUNT,
  // NOTE: the host pool reads an empty value as 1 thread, not as unset: empty is refused.
  SKV_HOST_THREADS: { takes: 'an integer in [1, 64] (host threads of the factorization)', ok: (v) => /^\d{1,2}$/.test(v) && Number(v) >= 1 && Number(v) <= 64 },
  SKV_LOW_RANK_TRACE: oneOf('0 or 1 (trace lowRankKeys to stderr)', '', '0', '1'),
};

/** `name`'s value (undefined where unset); a ConfigError where its reader does not take it. */
function checked(name: string): string | undefined {
  const value = process.env[name];
  const rule = CUDA_ENV[name]!;
  if (value === undefined || rule.ok(value)) return value;
  throw new ConfigError(`${name} must be ${rule.takes}, got ${fmt(value)}; unset it for the default`);
}

/** Throws a ConfigError for the first variable of CUDA_ENV set to a value its reader does not take. */
export function checkCudaEnv(): void {
  for (const name of Object.keys(CUDA_ENV)) checked(name);
}

/** A SWITCH variable of CUDA_ENV, read when a device is made: off only for "0". */
export function envSwitch(name: string): boolean {
  return checked(name) !== '0';
}

/** SHADOWKV_CUDA_DEVICE's ordinal, or undefined when unset or empty (checked as every variable is). */
export function envDevice(): number | undefined {
  const value = checked('SHADOWKV_CUDA_DEVICE');
  return value ? Number(value) : undefined;
}

/** A COUNT variable of CUDA_ENV, read when a device is made (tests set them between devices): 0 when unset or empty. */
export function envCount(name: string): number {
  return Number(checked(name)?.trim() || 0);
}
