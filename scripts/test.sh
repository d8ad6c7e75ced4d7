#!/usr/bin/env bash
# README command 2 (and CI): set up, build the CUDA addon where nvcc is, type-check, run the vitest
# suite, then print one line
# `N passed, N failed, N skipped` from vitest's JSON report. Exits with vitest's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage="bash scripts/test.sh   (the whole suite; for some files: npx vitest run <files>)"
. scripts/args.sh
no_args "$@"
bash scripts/setup.sh --browser
# The CUDA addon compiles wherever a CUDA compiler is (no GPU needed); its suites then say why
# they cannot run here instead of saying it is not built.
if { command -v nvcc || [ -x /usr/local/cuda/bin/nvcc ]; } >/dev/null && command -v cmake >/dev/null; then
  bash scripts/build-cuda.sh 2
else
  echo "test: no nvcc/cmake here: the CUDA addon is not built (its suites are skipped and say so)"
fi
npx tsc -p tsconfig.json
npx tsc -p packages/shadowkv/tsconfig.json --noEmit
npx tsc -p packages/llama/tsconfig.json --noEmit
report="$(mktemp -d)/vitest.json"
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  // Say why each skipped suite was skipped (its title carries the reason), once per suite.
  const reasons = new Map();
  for (const file of r.testResults) for (const t of file.assertionResults) {
    if (t.status !== "pending" && t.status !== "skipped") continue;
    const suite = t.ancestorTitles.find((a) => a.includes("skipped:")) ?? t.ancestorTitles.join(" > ");
    reasons.set(suite, (reasons.get(suite) ?? 0) + 1);
  }
  for (const [suite, n] of reasons) console.log(`skipped ${n}: ${suite.slice(0, 160)}`);
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
' "$report" || status=1
exit $status
