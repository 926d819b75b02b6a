// Probe kernels with known memory counters: the calibration of the counters that
// `ncu` reads on a GPU and that the emulator computes on the CPU (kernels/emulate/).
// Each kernel's comment gives the answer per warp-wide request; a counter that
// disagrees with it, on either side, is wrong.
//
// Plain CUDA C++ with no includes, so that CuPy compiles it at run time
// (bench/ncu_probe.py) and the emulator's g++ build takes it as it is.
// 32-byte sectors: a warp of 32 floats reads 128 contiguous bytes in 4 sectors.

// Global loads and stores, 4 bytes a lane, consecutive lanes consecutive: 4 sectors
// per request.
extern "C" __global__ void probe_copy(const float* in, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i];
}

// Loads 128 bytes apart (one float in every 32): 32 sectors per load request, each
// bringing 4 useful bytes of 32. The stores stay coalesced: 4 sectors per request.
extern "C" __global__ void probe_copy_stride32(const float* in, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[(i % (n / 32)) * 32 + (i / (n / 32)) % 32];
}

// 16 bytes a lane (float4): 512 bytes per warp, 16 sectors per request.
extern "C" __global__ void probe_copy_float4(const float4* in, float4* out, int n4) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n4) out[i] = in[i];
}

// Shared memory, 32 banks of 4 bytes. Each warp owns a 32 x 33 float slab. Lane l
// stores to and loads from word 32*l of its slab: every lane in bank 0, 32 wavefronts
// per request (a 32-way bank conflict).
extern "C" __global__ void probe_smem_conflict32(const float* in, float* out, int n) {
  __shared__ float slab[8][32 * 33];
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  slab[warp][32 * lane] = i < n ? in[i] : 0.0f;
  __syncwarp();
  float v = slab[warp][32 * ((lane + 1) % 32)];
  if (i < n) out[i] = v;
}

// The same slab with a row pitch of 33 words: lane l in bank l % 32, 1 wavefront per
// request (the padding that the tiled kernels use).
extern "C" __global__ void probe_smem_padded(const float* in, float* out, int n) {
  __shared__ float slab[8][32 * 33];
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  slab[warp][33 * lane] = i < n ? in[i] : 0.0f;
  __syncwarp();
  float v = slab[warp][33 * ((lane + 1) % 32)];
  if (i < n) out[i] = v;
}

// Every lane loads the same word: a broadcast, 1 wavefront per load request.
extern "C" __global__ void probe_smem_broadcast(const float* in, float* out, int n) {
  __shared__ float slab[8][32 * 33];
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (lane == 0) slab[warp][0] = i < n ? in[i] : 0.0f;
  __syncwarp();
  float v = slab[warp][0];
  if (i < n) out[i] = v + lane;
}
