// Model parity, our side: packages/llama's loop with the `full` cache (f32) against the greedy
// tokens and logits transformers wrote (scripts/gpu/hf_parity.py). HF's tokens are fed back
// (teacher forcing), so every step compares the same distribution; greedy parity means our argmax
// is HF's token at every step. transformers generated with min_new_tokens = its token count, which
// bans the end-of-sequence tokens from its choice (the logits it returns are from before that ban):
// our argmax bans them too. At a mismatch the margin between HF's token and ours says whether it is
// a near tie (a margin within the logit difference) or a real disagreement.
//   npx tsx scripts/hfParity.ts <checkpoint dir> <parity json>
import { readFileSync } from 'node:fs';
import { FullKVCache } from '../packages/shadowkv/src/index.js';
import { argmax, LlamaModel } from '../packages/llama/src/index.js';
import { cli } from '../examples/cli.js';

interface ParityCase { prompt: number[]; tokens: number[]; logits: number[][] }

const { dir, json } = cli('scripts/hfParity', "our model loop against transformers' greedy tokens and logits", {
  dir: { kind: 'arg', doc: 'the checkpoint folder' },
  json: { kind: 'arg', doc: 'the JSON scripts/gpu/hf_parity.py wrote' },
});
const hf = JSON.parse(readFileSync(json, 'utf8')) as { transformers: string; cases: ParityCase[] };
using model = await LlamaModel.load(dir);
let ok = true;
for (const c of hf.cases) {
  using cache = new FullKVCache({ spec: model.spec, dtype: 'f32', maxTokens: c.prompt.length + c.tokens.length });
  let logits = model.prefill(c.prompt, cache);
  let maxDiff = 0;
  let mismatch = '';
  c.tokens.forEach((token, i) => {
    if (i > 0) logits = model.forward([c.tokens[i - 1]!], cache);
    c.logits[i]!.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - logits[j]!))));
    const banned = logits.slice();
    for (const eos of model.config.eosTokenIds) banned[eos] = -Infinity;
    const ours = argmax(banned);
    if (!mismatch && ours !== token) mismatch = `first differs at ${i} (HF ${token}, ours ${ours}; our logits' margin ${(banned[ours]! - banned[token]!).toExponential(2)})`;
  });
  ok &&= !mismatch;
  console.log(`${c.prompt.length}-token prompt, ${c.tokens.length} greedy tokens: ${mismatch || 'identical'}, max |logit diff| ${maxDiff.toExponential(2)} (transformers ${hf.transformers})`);
}
process.exit(ok ? 0 : 1);
