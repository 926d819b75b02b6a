// The warp tile of the warp-tiled FP32 implicit GEMMs (backward-filter version 16;
// forward version 12 has the same tile in its own file): its geometry and its
// multiply, apart from any one pass's loaders, so that every pass can share them.
//
// A block's BM x BN tile of the GEMM C[m][n] += sum_k A[k][m] * B[k][n] is cut into
// warp tiles of WM x WN, each into WMITER x WNITER sub-tiles of 32 x 16; inside a
// sub-tile lane l owns the 4 x 4 outputs at rows (l % 8) * 4 .. +3 and columns
// (l / 8) * 4 .. +3. A thread thus holds TM x TN = 4 WMITER x 4 WNITER outputs, in
// runs of 4, and per k it reads its operands as WMITER + WNITER float4s: the 8 row
// runs of a warp are 128 contiguous bytes of a row of As, its 4 column runs 64 of Bs,
// so no two lanes ask one bank for different words (lanes that share a run get a
// broadcast). That holds for any row length of As and Bs that keeps rows 16-byte
// aligned (a multiple of 4 floats): the reads never cross a row, so the padding is
// the loaders' to choose, for their stores.
#pragma once

namespace pycnn {

// BM x BN outputs a block, BK = 16 of the reduction a step, warps of WM x WN in
// WMITER x WNITER sub-tiles of 32 x 16; MIN_BLOCKS: the resident blocks a kernel asks
// of ptxas (__launch_bounds__), which bounds its registers.
template <int BM_, int BN_, int WM_, int WN_, int WMITER_, int WNITER_, int MIN_BLOCKS_>
struct WarpGemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = 16;
  static constexpr int WM = WM_, WN = WN_, WMITER = WMITER_, WNITER = WNITER_;
  static constexpr int SUB_M = WM / WMITER, SUB_N = WN / WNITER;  // a warp sub-tile
  static constexpr int TM = WMITER * 4, TN = WNITER * 4;          // outputs a thread
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static_assert(SUB_M == 32 && SUB_N == 16, "a sub-tile is 8 x 4 lanes of 4 x 4 outputs");
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % WMITER == 0 && WN % WNITER == 0,
                "warps and sub-tiles divide the tile");
};

// Where a lane's first row run and first column run start in the block tile: warp
// (warp % WARPS_M, warp / WARPS_M) owns rows wm*WM .. and columns wn*WN .. of it.
template <class T>
__device__ __forceinline__ int warp_tile_row(int warp, int lane) {
  return (warp % T::WARPS_M) * T::WM + 4 * (lane % 8);
}
template <class T>
__device__ __forceinline__ int warp_tile_col(int warp, int lane) {
  return (warp / T::WARPS_M) * T::WN + 4 * (lane / 8);
}
// The block-tile row and column of acc[i][j] (a_row, b_col: the two above).
template <class T>
__device__ __forceinline__ int warp_tile_acc_row(int a_row, int i) {
  return a_row + (i / 4) * T::SUB_M + i % 4;
}
template <class T>
__device__ __forceinline__ int warp_tile_acc_col(int b_col, int j) {
  return b_col + (j / 4) * T::SUB_N + j % 4;
}

// acc[i][j] += sum over k < BK of As[k][row(i)] * Bs[k][col(j)], the rows and columns
// as above. LDA, LDB: the row lengths of the shared tiles (multiples of 4, the rows
// 16-byte aligned).
template <class T, int LDA, int LDB>
__device__ __forceinline__ void warp_tile_multiply(const float (&As)[T::BK][LDA], const float (&Bs)[T::BK][LDB],
                                                   float (&acc)[T::TM][T::TN], int a_row, int b_col) {
  static_assert(LDA % 4 == 0 && LDB % 4 == 0 && LDA >= T::BM && LDB >= T::BN,
                "float4 reads: rows of at least BM / BN floats, a multiple of 4");
#pragma unroll
  for (int k = 0; k < T::BK; ++k) {
    float a[T::TM], b[T::TN];
#pragma unroll
    for (int i = 0; i < T::WMITER; ++i) {
      const float4 v = *reinterpret_cast<const float4*>(&As[k][a_row + i * T::SUB_M]);
      a[4 * i] = v.x, a[4 * i + 1] = v.y, a[4 * i + 2] = v.z, a[4 * i + 3] = v.w;
    }
#pragma unroll
    for (int j = 0; j < T::WNITER; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(&Bs[k][b_col + j * T::SUB_N]);
      b[4 * j] = v.x, b[4 * j + 1] = v.y, b[4 * j + 2] = v.z, b[4 * j + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < T::TM; ++i)
#pragma unroll
      for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

}  // namespace pycnn
