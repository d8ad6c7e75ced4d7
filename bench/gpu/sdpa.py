#!/usr/bin/env python3
"""Dense PyTorch timings for the GPU benchmark (issue 7); bench/gpu/run.ts merges them into gpu-<card>.json.

Usage: python3 bench/gpu/sdpa.py <plan.json> <out.json> [--budget-s 120] [--no-eigh]

<plan.json> is what `bench/gpu/run.ts --plan` wrote: the contexts, the batches per context and the
largest batches. For the same shapes as the node half, on the same GPU run (scripts/gpu/bench.sh):

- decode: torch.nn.functional.scaled_dot_product_attention, q [B, 32, 1, 128], k/v [B, 8, S, 128],
  bf16, at every (context, batch) of the plan and at dense's largest batch. Variants: enable_gqa=True
  with the default dispatch and with each SDPA backend forced, eagerly and replayed from a CUDA graph
  (no Python launch overhead), and repeat_interleave of k/v to 32 heads inside every call (what HF's
  repeat_kv does). The fastest variant is the baseline; every variant's time or error is kept.
- prefill: causal SDPA (is_causal=True), q [1, 32, S, 128], k/v [1, 8, S, 128], bf16, per context.
- copy: a 1 GiB pinned host tensor .to('cuda', non_blocking=True) (the PCIe bandwidth ShadowKV's
  value fetches ride on).
- eigh (reference): the Gram matrix of a 131072 x 1024 bf16 -> f32 key matrix, and eigh of it.

Times are CUDA events around back-to-back calls, divided by the calls. Failures (out of memory, a
backend that does not take these inputs) are recorded, not fatal; the JSON is rewritten after every
section, so a run cut short keeps what it measured.
"""
import argparse
import json
import time

HQ, HKV, D = 32, 8, 128
GiB = 2**30


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("plan")
    p.add_argument("out")
    p.add_argument("--budget-s", type=float, default=120.0, help="skip what is left after this many seconds")
    p.add_argument("--no-eigh", action="store_true")
    return p.parse_args()


class Bench:
    def __init__(self, torch, budget_s):
        self.torch = torch
        self.F = torch.nn.functional
        self.t0 = time.time()
        self.budget_s = budget_s

    def over(self):
        return time.time() - self.t0 > self.budget_s

    def events_ms(self, fn, calls):
        """GPU ms per call: events around `calls` back-to-back calls."""
        torch = self.torch
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / calls

    def time(self, fn, calls, warmup, graph=False):
        """Warm-up, one call to size the run (at most ~1.5 s of calls), then the timed calls."""
        torch = self.torch
        if graph:
            # NOTE: capture on a side stream after a warm-up there, as torch.cuda.graphs asks.
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            fn = g.replay
        for _ in range(warmup):
            fn()
        one = self.events_ms(fn, 1)
        return self.events_ms(fn, max(3, min(calls, int(1500 / max(one, 1e-3)))))

    def run_variants(self, variants, calls, warmup):
        """{name: ms or error}, and the fastest as {variant, ms}."""
        out = {}
        for name, (fn, graph) in variants.items():
            eager = name[: -len("+graph")] if name.endswith("+graph") else name
            if graph and not isinstance(out.get(eager), float):
                out[name] = f"skipped: {eager} failed"  # a failed capture can leave the stream unusable
                continue
            try:
                out[name] = self.time(fn, calls, warmup, graph)
            except Exception as e:  # a backend that rejects the inputs, or out of memory
                out[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.torch.cuda.synchronize()
        ok = {k: v for k, v in out.items() if isinstance(v, float)}
        best = min(ok, key=ok.get) if ok else None
        return out, ({"variant": best, "ms": ok[best]} if best else None)

    def sdpa_variants(self, q, k, v, causal):
        """enable_gqa with the default dispatch and each backend forced (eager and graphed), and repeat_interleave."""
        torch, F = self.torch, self.F
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.3
        except ImportError:
            SDPBackend, sdpa_kernel = None, None

        def gqa(backend=None):
            def fn():
                if backend is None:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            return fn

        def repeat():
            g = HQ // HKV
            return F.scaled_dot_product_attention(q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), is_causal=causal)

        variants = {"gqa": (gqa(), False), "gqa+graph": (gqa(), True)}
        for name in ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"]:
            backend = getattr(SDPBackend, name, None) if SDPBackend else None
            if backend is not None:
                variants[f"gqa/{name.lower()}"] = (gqa(backend), False)
                variants[f"gqa/{name.lower()}+graph"] = (gqa(backend), True)
        # repeat_interleave makes 4x copies of k and v in every call: only where they fit.
        need = 2 * k.numel() * k.element_size() * (HQ // HKV)
        free = torch.cuda.mem_get_info()[0]
        if need < 0.85 * free:
            variants["repeat_interleave"] = (repeat, False)
        return variants, (None if need < 0.85 * free else f"repeat_interleave skipped: needs {need / GiB:.1f} GiB, {free / GiB:.1f} GiB free")

    def decode(self, S, B, calls, warmup):
        torch = self.torch
        opts = dict(dtype=torch.bfloat16, device="cuda")
        q = torch.randn(B, HQ, 1, D, **opts)
        k = torch.randn(B, HKV, S, D, **opts)
        v = torch.randn(B, HKV, S, D, **opts)
        variants, note = self.sdpa_variants(q, k, v, causal=False)
        out, best = self.run_variants(variants, calls, warmup)
        if note:
            out["repeat_interleave"] = note
        del q, k, v
        torch.cuda.empty_cache()
        return {"context": S, "batch": B, "best": best, "variants": out}

    def prefill(self, S):
        torch = self.torch
        opts = dict(dtype=torch.bfloat16, device="cuda")
        q = torch.randn(1, HQ, S, D, **opts)
        k = torch.randn(1, HKV, S, D, **opts)
        v = torch.randn(1, HKV, S, D, **opts)
        variants, note = self.sdpa_variants(q, k, v, causal=True)
        # Graph replays add nothing to a call of ~0.1 s and more: eager only.
        variants = {name: (fn, False) for name, (fn, graph) in variants.items() if not graph}
        out, best = self.run_variants(variants, 3, 1)
        if note:
            out["repeat_interleave"] = note
        del q, k, v
        torch.cuda.empty_cache()
        return {"context": S, "batch": 1, "best": best, "variants": out}

    def copy(self):
        torch = self.torch
        host = torch.empty(GiB, dtype=torch.uint8, pin_memory=True)
        ms = self.time(lambda: host.to("cuda", non_blocking=True), 5, 1)
        del host
        torch.cuda.empty_cache()
        return {"bytes": GiB, "ms": ms, "GBps": GiB / (ms / 1000) / 1e9}

    def eigh(self):
        torch = self.torch
        torch.backends.cuda.matmul.allow_tf32 = False  # an f32 Gram, as the factorization's
        k = torch.randn(131072, 1024, dtype=torch.bfloat16, device="cuda").float()
        gram_ms = self.time(lambda: k.T @ k, 3, 1)
        g = k.T @ k
        eigh_ms = self.time(lambda: torch.linalg.eigh(g), 3, 1)
        del k, g
        torch.cuda.empty_cache()
        return {"rows": 131072, "cols": 1024, "gram_ms": gram_ms, "eigh_ms": eigh_ms}


def main():
    args = parse()
    with open(args.plan) as f:
        plan = json.load(f)
    report = {"torch": None, "cuda": None, "cudnn": None, "device": None, "decode": [], "prefill": [], "seconds": 0.0, "errors": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)

    try:
        import torch
    except ImportError as e:
        report["errors"].append(f"no torch: {e}")
        save()
        raise SystemExit(f"sdpa.py: PyTorch is not installed here ({e})")
    b = Bench(torch, args.budget_s)
    props = torch.cuda.get_device_properties(0)
    report.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), device={"name": props.name, "totalBytes": props.total_memory})
    log = lambda line: print(f"[{time.time() - b.t0:6.1f} s] {line}", flush=True)
    log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name} ({props.total_memory / GiB:.1f} GiB)")

    modes = plan["modes"]
    cases = []
    if "decode" in modes or "full" in modes:
        cases = [(S, B) for S in plan["contexts"] for B in plan["batches"][str(S)]]
    largest = plan.get("largest")
    if largest and largest["dense"] > 0 and (largest["context"], largest["dense"]) not in cases:
        cases.append((largest["context"], largest["dense"]))
    for S, B in cases:
        if b.over():
            report["errors"].append(f"decode {S} x {B}: skipped, time budget ({args.budget_s} s) spent")
            continue
        r = b.decode(S, B, plan["steps"], plan["warmup"])
        report["decode"].append(r)
        log(f"decode {S} x {B}: {r['best']}")
        save()
    if "prefill" in modes:
        for S in plan["contexts"]:
            if b.over():
                report["errors"].append(f"prefill {S}: skipped, time budget spent")
                continue
            r = b.prefill(S)
            report["prefill"].append(r)
            log(f"prefill {S}: {r['best']}")
            save()
    for name, fn in [("copy", b.copy), ("eigh", b.eigh)]:
        if name == "eigh" and args.no_eigh:
            continue
        try:
            report[name] = fn()
        except Exception as e:
            report[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        log(f"{name}: {report[name]}")
    report["seconds"] = time.time() - b.t0
    save()


if __name__ == "__main__":
    main()
