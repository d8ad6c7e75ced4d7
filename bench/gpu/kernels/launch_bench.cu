// The host's cost of what a fused decode step issues (kernels/decode_layer.cu, runtime/cuda/binding.cc),
// call by call: kernel launches (plain, with programmatic dependent launch, as a cluster), event
// records and stream waits, a small pinned upload on a second stream, cudaFuncSetAttribute; and the
// same six launches as one CUDA graph (captured on a second stream, launched on the legacy stream),
// with whether the capture kept the programmatic edges and the GPU time of each way. Host times are
// the wall time of issuing 200 calls (the GPU drained before each batch), median of 15 batches.
#include <chrono>
#include "bench_util.cuh"

__global__ void Empty(int x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  if (x == -1) printf("never\n");
}

static cudaError_t launch(cudaStream_t s, bool pdl, unsigned cluster, dim3 grid) {
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(256);
  cfg.stream = s;
  cfg.attrs = attr;
  if (pdl) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeClusterDimension;
    attr[cfg.numAttrs++].val.clusterDim = {1, cluster, 1};
  }
  return cudaLaunchKernelEx(&cfg, Empty, 0);
}

// Host microseconds per call of f (calls of 200, the device idle before each), median of 15.
template <typename F>
static double host_us(F&& f) {
  std::vector<double> t;
  for (int r = 0; r < 16; r++) {
    CK(cudaDeviceSynchronize());
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; i++) f();
    const auto b = std::chrono::steady_clock::now();
    if (r) t.push_back(std::chrono::duration<double, std::micro>(b - a).count() / 200);
  }
  CK(cudaDeviceSynchronize());
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The step's six launches: append (batch blocks), logits, a cluster of 8 per task, fetch, attention, with PDL.
static void step(cudaStream_t s) {
  CK(launch(s, true, 0, dim3(1)));
  CK(launch(s, true, 0, dim3(8, 16)));
  CK(launch(s, true, 8, dim3(8, 8)));
  CK(launch(s, true, 0, dim3(8, 32)));
  CK(launch(s, true, 0, dim3(8, 20)));
  CK(launch(s, true, 0, dim3(132)));
}

int main() {
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  printf("%s, %d SMs\n", p.name, p.multiProcessorCount);
  cudaStream_t side, cap;
  CK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&cap, cudaStreamNonBlocking));
  cudaEvent_t e;
  CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  void *h, *d;
  CK(cudaHostAlloc(&h, 1 << 16, cudaHostAllocDefault));
  CK(cudaMalloc(&d, 1 << 16));
  printf("host us per call:\n");
  printf("  <<<>>> launch                      %6.2f\n", host_us([] { Empty<<<8, 256>>>(0); }));
  printf("  cudaLaunchKernelEx                 %6.2f\n", host_us([] { CK(launch(0, false, 0, dim3(8))); }));
  printf("  cudaLaunchKernelEx + PDL           %6.2f\n", host_us([] { CK(launch(0, true, 0, dim3(8))); }));
  printf("  cudaLaunchKernelEx + PDL, cluster 8 %5.2f\n", host_us([] { CK(launch(0, true, 8, dim3(8, 8))); }));
  printf("  cudaEventRecord                    %6.2f\n", host_us([&] { CK(cudaEventRecord(e, 0)); }));
  printf("  cudaStreamWaitEvent                %6.2f\n", host_us([&] { CK(cudaStreamWaitEvent(0, e, 0)); }));
  printf("  cudaMemcpyAsync 24 KB, 2nd stream  %6.2f\n", host_us([&] { CK(cudaMemcpyAsync(d, h, 24576, cudaMemcpyHostToDevice, side)); }));
  printf("  cudaFuncSetAttribute               %6.2f\n", host_us([] { CK(cudaFuncSetAttribute(Empty, cudaFuncAttributeMaxDynamicSharedMemorySize, 100000)); }));
  printf("  the step's 6 launches               %6.2f\n", host_us([] { step(0); }));
  // The same six as a graph.
  cudaGraph_t g;
  CK(cudaStreamBeginCapture(cap, cudaStreamCaptureModeRelaxed));
  step(cap);
  CK(cudaStreamEndCapture(cap, &g));
  size_t nodes = 0, edges = 0;
  CK(cudaGraphGetNodes(g, nullptr, &nodes));
  CK(cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &edges));
  std::vector<cudaGraphNode_t> from(edges), to(edges);
  std::vector<cudaGraphEdgeData> data(edges);
  CK(cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &edges));
  int programmatic = 0;
  for (const cudaGraphEdgeData& x : data) programmatic += x.type == cudaGraphDependencyTypeProgrammatic;
  printf("  graph: %zu nodes, %zu edges, %d programmatic\n", nodes, edges, programmatic);
  cudaGraphExec_t exec;
  const auto t0 = std::chrono::steady_clock::now();
  CK(cudaGraphInstantiate(&exec, g, 0));
  printf("  cudaGraphInstantiate (once)        %6.1f\n", std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  printf("  cudaGraphLaunch of the 6            %6.2f\n", host_us([&] { CK(cudaGraphLaunch(exec, 0)); }));
  printf("GPU us per step (100 back to back): launches %.2f, graph %.2f\n",
         1000 * median_ms(5, [] { for (int i = 0; i < 100; i++) step(0); }) / 100,
         1000 * median_ms(5, [&] { for (int i = 0; i < 100; i++) CK(cudaGraphLaunch(exec, 0)); }) / 100);
  return 0;
}
