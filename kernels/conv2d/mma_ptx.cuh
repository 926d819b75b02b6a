// The tensor-core and async-copy instructions of the mma.sync kernels (version 13), as
// small device functions around inline PTX, each one instruction:
//   mma_m16n8k8_tf32    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   mma_m16n8k16_bf16   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   ldmatrix_x4/_x2     ldmatrix.sync.aligned.m8n8.x4/.x2.shared.b16 (and .trans)
//   cp_async_ca<N>      cp.async.ca.shared.global, N = 4, 8 or 16 bytes, with src-size
//   cp_async_cg16       cp.async.cg.shared.global, 16 bytes, with src-size
//   cp_async_commit     cp.async.commit_group
//   cp_async_wait<N>    cp.async.wait_group N
//   tf32_rna            cvt.rna.tf32.f32 (round to nearest, ties away from zero)
//   bf16x2_rn           cvt.rn.bf16x2.f32 (two floats, round to nearest even)
// Built for the CPU emulator (PYCNN_KERNEL_EMULATION), the same names come from
// emulate/emu_mma.h, whose versions follow the PTX ISA's fragment layouts lane by lane
// (that file lists them, with the ISA's sections) and whose cp.async lands only at the
// wait_group that covers it, so the emulator checks a kernel's use of these.
//
// Registers: an A or B operand is a 32-bit register per element (TF32: the fp32 bit
// pattern; the tensor core reads its top 19 bits) or per pair of bf16 (the lower-
// numbered element in the low half). Shared-memory addresses are passed as generic
// pointers and converted here (cvta.to.shared).
// src-size (cp.async): the bytes read from src; the rest of the destination is zero-
// filled, so src-size 0 zero-fills it all and reads nothing (src must still be a valid,
// aligned address: pass the tensor's base). Both addresses aligned to the copy's size.
// Needs compute capability 8.0 (mma tf32/bf16, cp.async); ldmatrix 7.5.
#pragma once

#include <cstdint>

#ifdef PYCNN_KERNEL_EMULATION
#include "emulate/emu_mma.h"
#else

namespace pycnn {
namespace ptx {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ uint32_t tf32_rna(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ float tf32_float(uint32_t bits) { return __uint_as_float(bits); }

// lo in the low half: cvt.rn.bf16x2.f32 d, a, b puts a in the upper half, b in the lower.
__device__ __forceinline__ uint32_t bf16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

// "memory": the rows may have been written by ordinary stores just before.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(row))
               : "memory");
}

template <int BYTES>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src, int src_bytes) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async.ca: 4, 8 or 16 bytes");
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_u32(dst)), "l"(src), "n"(BYTES),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_cg16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace ptx
}  // namespace pycnn

#endif  // PYCNN_KERNEL_EMULATION
