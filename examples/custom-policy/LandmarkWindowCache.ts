// A cache policy plugin: ShadowKV's chunk selection without its compression. Each chunk of exact
// keys is summarized by its mean (a landmark), the query scores the landmarks, the top chunks and
// a recent window are attended. Everything stays exact on the device, so comparing it with
// `shadowkv` at the same budget isolates what the low-rank keys and offloaded values cost.
import {
  ChunkScoringCache, definePolicyOptions, registerPolicy, type CacheConfig, type PolicyFactory, type Runtime, type View,
} from '../../packages/shadowkv/src/backend.js';

/** The plugin's options: typed, with defaults and ranges checked by `definePolicyOptions`. */
export interface LandmarkWindowOptions {
  /** Tokens per chunk (one landmark each). Default 8. */
  chunkSize?: number;
  /** Tokens of top-scoring chunks attended per kv head and step, a multiple of chunkSize. Default 2048. */
  budget?: number;
  /** Last tokens always attended. Default 64. */
  recentTokens?: number;
}

const OPTIONS = definePolicyOptions<LandmarkWindowOptions>(
  {
    chunkSize: { default: 8, min: 1, max: 1024 },
    budget: { default: 2048, min: 1, max: 65536 },
    recentTokens: { default: 64, min: 0, max: 2 ** 20 },
  },
  (o) => (o.budget % o.chunkSize ? `budget (${o.budget}) must be a multiple of chunkSize (${o.chunkSize})` : undefined),
);

export class LandmarkWindowCache extends ChunkScoringCache<LandmarkWindowOptions> {
  readonly name = 'landmark-window';
  protected readonly summaryWidth: number;

  constructor(config: CacheConfig & LandmarkWindowOptions, runtime?: Runtime) {
    super(config, OPTIONS, runtime);
    this.summaryWidth = this.spec.headDim;
  }

  /** A chunk's landmark: the mean of its post-RoPE keys (the device's `landmarks` op). */
  protected summarizeChunks(keys: View, chunks: number, out: View): void {
    const d = this.spec.headDim;
    const minCos = this.device.scratch('landmark-window.mincos', chunks, 'f32');
    this.device.landmarks(keys, d, chunks, this.options.chunkSize, d, out, { buf: minCos, offset: 0 });
  }

  /** Landmarks are scored with the query itself. */
  protected scoringQueries(q: View, out: View): void {
    const { queryHeads: Hq, headDim: d } = this.spec;
    this.device.copy(out, q, Hq * d);
  }
}

/** The factory: one object, so registering twice (two test files, a hot reload) is a no-op. */
export const createLandmarkWindow: PolicyFactory<LandmarkWindowOptions> = (config, runtime) => new LandmarkWindowCache(config, runtime);

/** Registers the plugin as `'landmark-window'`. */
export function registerLandmarkWindow(): void {
  registerPolicy('landmark-window', createLandmarkWindow);
}

declare module '../../packages/shadowkv/src/createCache.js' {
  interface PolicyTypes {
    'landmark-window': { cache: LandmarkWindowCache; options: LandmarkWindowOptions };
  }
}
