// How many value chunks of a real model's prompt the packed host tier (`packedValues`,
// runtime/wasm/pack.h) packs: the bundled model reads a haystack once with exact attention, and each
// layer's values (bf16) are cut into chunks of C tokens per kv head; a chunk packs where every
// exponent field is 0 or within 14 of the chunk's largest. Prints the share per layer and the bytes
// a fetch of every chunk would move against bf16's (packed chunks 3/4).
//   npx tsx bench/packedShare.ts [--tokens 8192] [--chunk 8] [--model models/skv-small]
import { loadCheckpoint, LlamaModel } from '../packages/llama/src/index.js';
import { ready } from '../packages/shadowkv/src/index.js';
import { fetchRatio, packedChunks } from './packRule.js';
import { encodeSample, prefillOnce } from './eval/evaluate.js';
import { drawSample } from './eval/tasks.js';
import { cli } from '../examples/cli.js';

const args = cli('packedShare', "the share of a real model's value chunks that the packed host tier packs", {
  model: { kind: 'string', default: 'models/skv-small', doc: 'a model folder' },
  tokens: { kind: 'int', default: 8192, min: 256, max: 1 << 20, doc: 'haystack tokens' },
  chunk: { kind: 'int', default: 8, min: 1, max: 64, doc: 'tokens a chunk' },
});

const { ids } = encodeSample(drawSample('needle_single', args.tokens, 0));
const backend = await ready({ backend: 'wasm' });
using model = await LlamaModel.create(await loadCheckpoint(args.model), { backend: backend.name });
const { kvHeads, headDim: d } = model.spec;
const shared = await prefillOnce(model, ids, { backend: backend.name, maxTokens: ids.length + 1 });
const perLayer = new Map<number, { packed: number; all: number }>();
for (const call of shared.calls) {
  const s = perLayer.get(call.layer) ?? { packed: 0, all: 0 };
  const got = packedChunks(call.values, kvHeads, d, args.chunk);
  perLayer.set(call.layer, { packed: s.packed + got.packed, all: s.all + got.all });
}
let packed = 0, all = 0;
for (const [layer, s] of [...perLayer].sort((a, b) => a[0] - b[0])) {
  console.log(`layer ${layer}: ${s.packed} of ${s.all} chunks pack (${((100 * s.packed) / s.all).toFixed(1)} %)`);
  packed += s.packed;
  all += s.all;
}
console.log(`${args.model}, ${ids.length} tokens, chunks of ${args.chunk} tokens x ${d}: ${((100 * packed) / all).toFixed(1)} % pack; a fetch moves ${fetchRatio({ packed, all }).toFixed(3)} of bf16's bytes`);
