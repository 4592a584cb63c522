// Causal depthwise conv1d (+ SiLU), channels-last, forward and backward: one thread per channel walks a chunk
// of time steps with the last KW inputs in registers. Compiled at run time by NVRTC
// (msmbench/ops/causal_conv1d_cuda.py states the formulas and prepends the #defines below); the PyTorch
// reference is selective_scan.causal_conv1d.
//
// Compile-time parameters (all required):
//   ELEM    storage type of x, y, dy, dx: 0 float, 1 bf16, 2 fp16     KW     kernel width
//   SILU    apply SiLU to the output                                    CHB    channels (threads) per block
//   STEPS   steps per block                                             ROWS   batch rows per backward block

#include "cuda_elem.cuh"  // elem_t, to_f32, from_f32, sigmoid

// Moves the window one step on: win[k] = value at step l - (KW - 1) + k once `next` (step l) is appended.
__device__ __forceinline__ void push(float (&win)[KW], float next) {
#pragma unroll
    for (int k = 0; k < KW - 1; ++k) win[k] = win[k + 1];
    win[KW - 1] = next;
}

// bias + sum_k w[k] x[l - (KW - 1) + k]: the pre-activation at step l from the window ending there.
__device__ __forceinline__ float conv_at(const float (&w)[KW], const float (&xw)[KW], float bias) {
    float acc = bias;
#pragma unroll
    for (int k = 0; k < KW; ++k) acc = fmaf(w[k], xw[k], acc);
    return acc;
}

// The window before step l0: x[l0 - KW + 1 .. l0 - 1] (zeros before the start) in xw[1 .. KW - 1].
__device__ __forceinline__ void fill_window(float (&xw)[KW], const elem_t* xb, int sx_l, int l0) {
    xw[0] = 0.f;
#pragma unroll
    for (int k = 1; k < KW; ++k) {
        const int t = l0 - KW + k;
        xw[k] = t >= 0 ? to_f32(xb[(long long)t * sx_l]) : 0.f;
    }
}

__device__ __forceinline__ void load_filter(float (&w)[KW], const float* weight, int d) {
#pragma unroll
    for (int k = 0; k < KW; ++k) w[k] = weight[d * KW + k];
}

// grid (channel blocks, step blocks, batch); y is contiguous (B, L, D). Strides are in elements (int: the
// launcher passes Python ints as 32-bit).
extern "C" __global__ void __launch_bounds__(CHB)
conv_fwd(const elem_t* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
         elem_t* __restrict__ y, int L, int Dm, int sx_b, int sx_l) {
    const int d = blockIdx.x * CHB + threadIdx.x;
    if (d >= Dm) return;
    const int l0 = blockIdx.y * STEPS, l1 = min(l0 + STEPS, L);
    const long long b = blockIdx.z;
    const elem_t* xb = x + b * sx_b + d;
    elem_t* yb = y + b * (long long)L * Dm + d;
    float w[KW], xw[KW];
    load_filter(w, weight, d);
    const float bd = bias[d];
    fill_window(xw, xb, sx_l, l0);
#pragma unroll 4
    for (int l = l0; l < l1; ++l) {
        push(xw, to_f32(xb[(long long)l * sx_l]));
        float v = conv_at(w, xw, bd);
        if (SILU) v *= sigmoid(v);
        yb[(long long)l * Dm] = from_f32(v);
    }
}

// grid (channel blocks, step blocks, batch blocks of ROWS rows). With gp = dy * act'(pre):
//   dx[m] = sum_k w[k] gp[m + KW - 1 - k]      dw[k] = sum_(b,l) gp[l] x[l - KW + 1 + k]      dbias = sum gp
// A block recomputes pre (and gp) for its steps and the KW - 1 after them, so it needs no other block's.
// dw and dbias are written per block (dw_part [P, D, KW], dbias_part [P, D], P = step blocks x batch
// blocks) and summed by the caller: deterministic, no atomics.
extern "C" __global__ void __launch_bounds__(CHB)
conv_bwd(const elem_t* __restrict__ x, const elem_t* __restrict__ dy, const float* __restrict__ weight,
         const float* __restrict__ bias, elem_t* __restrict__ dx, float* __restrict__ dw_part,
         float* __restrict__ dbias_part, int L, int Dm, int nbatch, int sx_b, int sx_l, int sg_b, int sg_l) {
    const int d = blockIdx.x * CHB + threadIdx.x;
    if (d >= Dm) return;
    const int l0 = blockIdx.y * STEPS, l1 = min(l0 + STEPS, L);
    float w[KW], dw[KW];
    load_filter(w, weight, d);
#pragma unroll
    for (int k = 0; k < KW; ++k) dw[k] = 0.f;
    const float bd = bias[d];
    float db = 0.f;
    for (int bb = 0; bb < ROWS; ++bb) {
        const long long b = (long long)blockIdx.z * ROWS + bb;
        if (b >= nbatch) break;
        const elem_t* xb = x + b * sx_b + d;
        const elem_t* gb = dy + b * sg_b + d;
        elem_t* dxb = dx + b * (long long)L * Dm + d;
        float xw[KW], gw[KW];   // x and gp at steps l - KW + 1 .. l
        fill_window(xw, xb, sx_l, l0);
#pragma unroll
        for (int k = 0; k < KW; ++k) gw[k] = 0.f;   // gp before l0 reaches only dx before l0
#pragma unroll 4
        for (int l = l0; l < l1 + KW - 1; ++l) {
            float gp = 0.f;
            if (l < L) {
                push(xw, to_f32(xb[(long long)l * sx_l]));
                gp = to_f32(gb[(long long)l * sg_l]);
                if (SILU) {
                    const float pre = conv_at(w, xw, bd), s = sigmoid(pre);
                    gp *= s * fmaf(pre, 1.f - s, 1.f);
                }
                if (l < l1) {
                    db += gp;
#pragma unroll
                    for (int k = 0; k < KW; ++k) dw[k] = fmaf(gp, xw[k], dw[k]);
                }
            }
            push(gw, gp);
            const int m = l - (KW - 1);
            if (m >= l0 && m < l1) {
                float v = 0.f;
#pragma unroll
                for (int k = 0; k < KW; ++k) v = fmaf(w[k], gw[KW - 1 - k], v);
                dxb[(long long)m * Dm] = from_f32(v);
            }
        }
    }
    const long long p = (long long)blockIdx.z * gridDim.y + blockIdx.y;
#pragma unroll
    for (int k = 0; k < KW; ++k) dw_part[(p * Dm + d) * KW + k] = dw[k];
    dbias_part[p * Dm + d] = db;
}
