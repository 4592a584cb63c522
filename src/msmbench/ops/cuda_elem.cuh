// Shared by msmbench's CUDA kernels (selective_scan.cu, causal_conv1d.cu): the storage type chosen by ELEM
// (0 float, 1 bf16, 2 fp16) with its conversions to and from float32, and softplus / sigmoid in float32.
#pragma once

#if ELEM == 0
typedef float elem_t;
__device__ __forceinline__ float to_f32(elem_t x) { return x; }
__device__ __forceinline__ elem_t from_f32(float x) { return x; }
#else
typedef unsigned short elem_t;
#if ELEM == 1
__device__ __forceinline__ float to_f32(elem_t x) { return __uint_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ elem_t from_f32(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
#else
__device__ __forceinline__ float to_f32(elem_t x) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(x));
    return r;
}
__device__ __forceinline__ elem_t from_f32(float x) {
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
#endif
#endif

// torch.nn.functional.softplus (threshold 20) and sigmoid, in float32
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
