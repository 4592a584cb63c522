// Mamba-1 selective scan, forward and backward, one thread per (channel, group of states), time walked
// step by step. Compiled at run time by NVRTC (msmbench/ops/selective_scan_cuda.py, which states the
// algorithm and prepends the #defines below); the PyTorch reference is selective_scan.selective_scan_ref.
//
// Compile-time parameters (all required):
//   ELEM     storage type of u, delta, z, B, C, dout, out, du, d(delta), dz: 0 float, 1 bf16, 2 fp16
//   NSTATE   d_state N                NG    threads per channel (1, 2, 4 or 8), SPT states per thread
//   CH       channels per block       SEG   steps per segment (the forward saves the state every SEG steps)
//   KG       steps whose sums over channels (dB, dC) are taken together (divides SEG)
//   HAS_Z    gate the output by silu(z)         SOFTPLUS   dt = softplus(delta + bias), else delta + bias

#define NP (NG * SPT)      // states padded to a multiple of NG (padded states have A = B = C = 0)
#define NTHREADS (CH * NG)
#define NWARPS (NTHREADS / 32)
#define FULL_MASK 0xffffffffu
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#include "cuda_elem.cuh"  // elem_t, to_f32, from_f32, softplus, sigmoid

// Sum over the NG lanes of one channel; every one of them gets the sum.
__device__ __forceinline__ float sum_states(float v) {
#pragma unroll
    for (int off = NG / 2; off > 0; off /= 2) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

// Sums over the channels of one warp (the lanes that hold the same states: lane bits NG .. 16) of V values
// per lane, each sum left on one lane. While the count is even, each lane keeps one half of its values and
// adds its partner's copy of that half: V/2 + V/4 + ... shuffles instead of V per lane bit. An odd count
// finishes with plain butterfly sums. The lane then holds the sums of entries first .. first + count - 1.
template <int COUNT, int OFF, int V>
__device__ __forceinline__ void channel_sums(float (&v)[V], int lane, int& first) {
    if constexpr (OFF < 32 && COUNT % 2 == 0) {
        constexpr int H = COUNT / 2;
        const bool upper = lane & OFF;
#pragma unroll
        for (int i = 0; i < H; ++i) {
            const float send = upper ? v[i] : v[H + i];
            const float keep = upper ? v[H + i] : v[i];
            v[i] = keep + __shfl_xor_sync(FULL_MASK, send, OFF);
        }
        if (upper) first += H;
        channel_sums<H, OFF * 2, V>(v, lane, first);
    } else {
#pragma unroll
        for (int off = OFF; off < 32; off *= 2) {
#pragma unroll
            for (int i = 0; i < COUNT; ++i) v[i] += __shfl_xor_sync(FULL_MASK, v[i], off);
        }
    }
}
__host__ __device__ constexpr int sums_left(int count, int off) {
    return off < 32 && count % 2 == 0 ? sums_left(count / 2, off * 2) : count;
}
__host__ __device__ constexpr int sums_end(int count, int off) {
    return off < 32 && count % 2 == 0 ? sums_end(count / 2, off * 2) : off;
}

// v[kk * SPT + j] = this lane's value for step k0 + kk and state g * SPT + j: the warp's sums over its
// channels into dst[k0 + kk][n].
__device__ __forceinline__ void store_channel_sums(float (&v)[KG * SPT], float (*dst)[NP], int k0, int g, int lane) {
    constexpr int V = KG * SPT, LEFT = sums_left(V, NG), END = sums_end(V, NG);
    int first = 0;
    channel_sums<V, NG, V>(v, lane, first);
    if ((lane & (32 - END)) == 0) {  // lanes past the last halving hold copies
#pragma unroll
        for (int i = 0; i < LEFT; ++i) {
            const int e = first + i;
            dst[k0 + e / SPT][g * SPT + e % SPT] = v[i];
        }
    }
}

// B and C of steps t0 .. t0+SEG-1 into shared memory (zeros past L and past N).
__device__ __forceinline__ void stage_bc(float (*sB)[NP], float (*sC)[NP], const elem_t* Bb, const elem_t* Cb,
                                         long long sB_l, long long sC_l, int t0, int L) {
    for (int i = threadIdx.x; i < SEG * NP; i += NTHREADS) {
        int k = i / NP, n = i % NP, t = t0 + k;
        bool ok = t < L && n < NSTATE;
        sB[k][n] = ok ? to_f32(Bb[t * sB_l + n]) : 0.f;
        sC[k][n] = ok ? to_f32(Cb[t * sC_l + n]) : 0.f;
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
scan_fwd(const elem_t* __restrict__ u, const elem_t* __restrict__ delta, const elem_t* __restrict__ z,
         const elem_t* __restrict__ Bm, const elem_t* __restrict__ Cm, const float* __restrict__ A,
         const float* __restrict__ Dskip, const float* __restrict__ dbias, elem_t* __restrict__ out,
         float* __restrict__ hs, int L, int Dm, int nseg,
         int su_b, int su_l, int sd_b, int sd_l, int sz_b, int sz_l, int sB_b, int sB_l, int sC_b, int sC_l) {
    __shared__ float s_dt[SEG][CH], s_x[SEG][CH], s_u[SEG][CH], s_z[SEG][CH], s_y[SEG][CH];
    __shared__ float s_B[SEG][NP], s_C[SEG][NP];
    const int g = threadIdx.x % NG, c = threadIdx.x / NG;
    const int d0 = blockIdx.x * CH, d = d0 + c;
    const long long b = blockIdx.y;
    const bool d_ok = d < Dm;
    u += b * su_b; delta += b * sd_b; z += b * sz_b; Bm += b * sB_b; Cm += b * sC_b;
    out += b * (long long)L * Dm;

    float A2[SPT], h[SPT];
#pragma unroll
    for (int j = 0; j < SPT; ++j) {
        int n = g * SPT + j;
        A2[j] = (d_ok && n < NSTATE) ? A[(long long)d * NSTATE + n] * LOG2E : 0.f;
        h[j] = 0.f;
    }
    const float Dd = d_ok ? Dskip[d] : 0.f;

    for (int seg = 0; seg < nseg; ++seg) {
        const int t0 = seg * SEG;
        if (d_ok) {  // the state entering step t0, for the backward
            float* dst = hs + ((b * nseg + seg) * Dm + d) * NSTATE;
#pragma unroll
            for (int j = 0; j < SPT; ++j)
                if (g * SPT + j < NSTATE) dst[g * SPT + j] = h[j];
        }
        __syncthreads();  // the previous segment's shared memory has been read
        for (int i = threadIdx.x; i < SEG * CH; i += NTHREADS) {
            int k = i / CH, cc = i % CH, t = t0 + k, dd = d0 + cc;
            float dt = 0.f, uu = 0.f, zz = 0.f;
            if (t < L && dd < Dm) {
                uu = to_f32(u[(long long)t * su_l + dd]);
                float raw = to_f32(delta[(long long)t * sd_l + dd]) + dbias[dd];
                dt = SOFTPLUS ? softplus(raw) : raw;
                if (HAS_Z) zz = to_f32(z[(long long)t * sz_l + dd]);
            }
            s_dt[k][cc] = dt; s_x[k][cc] = dt * uu; s_u[k][cc] = uu; s_z[k][cc] = zz;
        }
        stage_bc(s_B, s_C, Bm, Cm, sB_l, sC_l, t0, L);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < SEG; ++k) {
            const float dt = s_dt[k][c], x = s_x[k][c];
            float y = 0.f;
#pragma unroll
            for (int j = 0; j < SPT; ++j) {
                float a = exp2f(dt * A2[j]);
                h[j] = fmaf(a, h[j], x * s_B[k][g * SPT + j]);
                y = fmaf(s_C[k][g * SPT + j], h[j], y);
            }
            y = sum_states(y);
            if (g == 0) {
                y = fmaf(Dd, s_u[k][c], y);
                if (HAS_Z) { float zz = s_z[k][c]; y *= zz * sigmoid(zz); }
                s_y[k][c] = y;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < SEG * CH; i += NTHREADS) {
            int k = i / CH, cc = i % CH, t = t0 + k, dd = d0 + cc;
            if (t < L && dd < Dm) out[(long long)t * Dm + dd] = from_f32(s_y[k][cc]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
scan_bwd(const elem_t* __restrict__ u, const elem_t* __restrict__ delta, const elem_t* __restrict__ z,
         const elem_t* __restrict__ Bm, const elem_t* __restrict__ Cm, const float* __restrict__ A,
         const float* __restrict__ Dskip, const float* __restrict__ dbias, const elem_t* __restrict__ dout,
         const float* __restrict__ hs,
         elem_t* __restrict__ du, elem_t* __restrict__ ddelta, elem_t* __restrict__ dz,
         float* __restrict__ dB_part, float* __restrict__ dC_part, float* __restrict__ dA_part,
         float* __restrict__ dD_part, float* __restrict__ dbias_part,
         int L, int Dm, int nseg, int nbatch,
         int su_b, int su_l, int sd_b, int sd_l, int sz_b, int sz_l, int sB_b, int sB_l, int sC_b, int sC_l,
         int sg_b, int sg_l) {
    // per step and channel: dt, x = dt u, u, dy = dout silu(z), dz / y, softplus'(delta + bias)
    __shared__ float s_dt[SEG][CH], s_x[SEG][CH], s_u[SEG][CH], s_dy[SEG][CH], s_zf[SEG][CH], s_dsp[SEG][CH];
    __shared__ float s_du[SEG][CH], s_dd[SEG][CH], s_dz[SEG][CH];   // results, written out coalesced
    __shared__ float s_B[SEG][NP], s_C[SEG][NP];
    __shared__ float s_rB[NWARPS][SEG][NP], s_rC[NWARPS][SEG][NP];  // per-warp sums over channels
    const int g = threadIdx.x % NG, c = threadIdx.x / NG;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int d0 = blockIdx.x * CH, d = d0 + c;
    const long long b = blockIdx.y;
    const bool d_ok = d < Dm;
    u += b * su_b; delta += b * sd_b; z += b * sz_b; Bm += b * sB_b; Cm += b * sC_b; dout += b * sg_b;
    const long long row = b * (long long)L * Dm;
    du += row; ddelta += row; dz += row;
    const long long part = ((long long)blockIdx.x * nbatch + b) * L * NSTATE;
    dB_part += part; dC_part += part;

    float A2[SPT], s[SPT], dA[SPT];
#pragma unroll
    for (int j = 0; j < SPT; ++j) {
        int n = g * SPT + j;
        A2[j] = (d_ok && n < NSTATE) ? A[(long long)d * NSTATE + n] * LOG2E : 0.f;
        s[j] = 0.f;   // a_{t+1} r_{t+1}: the adjoint arriving from later steps
        dA[j] = 0.f;
    }
    const float Dd = d_ok ? Dskip[d] : 0.f;
    float dD = 0.f, dbias_acc = 0.f;

    for (int seg = nseg - 1; seg >= 0; --seg) {
        const int t0 = seg * SEG;
        __syncthreads();
        for (int i = threadIdx.x; i < SEG * CH; i += NTHREADS) {
            int k = i / CH, cc = i % CH, t = t0 + k, dd = d0 + cc;
            float dt = 0.f, uu = 0.f, dy = 0.f, zf = 0.f, dsp = 0.f;
            if (t < L && dd < Dm) {
                uu = to_f32(u[(long long)t * su_l + dd]);
                float raw = to_f32(delta[(long long)t * sd_l + dd]) + dbias[dd];
                dt = SOFTPLUS ? softplus(raw) : raw;
                dsp = SOFTPLUS ? sigmoid(raw) : 1.f;
                float go = to_f32(dout[(long long)t * sg_l + dd]);
                if (HAS_Z) {
                    float zz = to_f32(z[(long long)t * sz_l + dd]), sg = sigmoid(zz);
                    dy = go * zz * sg;
                    zf = go * sg * (1.f + zz * (1.f - sg));
                } else {
                    dy = go;
                }
            }
            s_dt[k][cc] = dt; s_x[k][cc] = dt * uu; s_u[k][cc] = uu; s_dy[k][cc] = dy; s_zf[k][cc] = zf;
            s_dsp[k][cc] = dsp;
        }
        stage_bc(s_B, s_C, Bm, Cm, sB_l, sC_l, t0, L);

        // The state entering the segment, then the segment's states recomputed and kept in registers.
        float h0[SPT], hist[SEG][SPT];
        const float* src = hs + ((b * nseg + seg) * Dm + d) * NSTATE;
#pragma unroll
        for (int j = 0; j < SPT; ++j) h0[j] = (d_ok && g * SPT + j < NSTATE) ? src[g * SPT + j] : 0.f;
        __syncthreads();
#pragma unroll
        for (int k0 = 0; k0 < SEG; k0 += KG) {
            float dC[KG * SPT];
#pragma unroll
            for (int kk = 0; kk < KG; ++kk) {
                const int k = k0 + kk;
                const float dt = s_dt[k][c], x = s_x[k][c], dy = s_dy[k][c];
                float y = 0.f;
#pragma unroll
                for (int j = 0; j < SPT; ++j) {
                    float a = exp2f(dt * A2[j]);
                    float hp = k == 0 ? h0[j] : hist[k - 1][j];
                    hist[k][j] = fmaf(a, hp, x * s_B[k][g * SPT + j]);
                    y = fmaf(s_C[k][g * SPT + j], hist[k][j], y);
                    dC[kk * SPT + j] = dy * hist[k][j];
                }
                if (HAS_Z) {
                    y = sum_states(y);
                    if (g == 0) s_dz[k][c] = fmaf(Dd, s_u[k][c], y) * s_zf[k][c];
                }
            }
            store_channel_sums(dC, s_rC[warp], k0, g, lane);
        }
        // The adjoint r_t = C_t dy_t + a_{t+1} r_{t+1} backwards through the segment, and the gradients.
#pragma unroll
        for (int k0 = SEG - KG; k0 >= 0; k0 -= KG) {
            float dB[KG * SPT];
#pragma unroll
            for (int kk = KG - 1; kk >= 0; --kk) {
                const int k = k0 + kk;
                const float dt = s_dt[k][c], x = s_x[k][c], dy = s_dy[k][c];
                float dx = 0.f, dq = 0.f;
#pragma unroll
                for (int j = 0; j < SPT; ++j) {
                    float a = exp2f(dt * A2[j]);
                    float hp = k == 0 ? h0[j] : hist[k - 1][j];
                    float r = fmaf(s_C[k][g * SPT + j], dy, s[j]);
                    float q = r * a * hp;                     // r_t a_t h_{t-1}: d/d(dt) of the decay term
                    dx = fmaf(s_B[k][g * SPT + j], r, dx);
                    dq = fmaf(A2[j], q, dq);
                    dA[j] = fmaf(dt, q, dA[j]);
                    dB[kk * SPT + j] = x * r;
                    s[j] = a * r;
                }
                dx = sum_states(dx);
                dq = sum_states(dq) * LN2;                    // A2 = A log2(e)
                if (g == 0) {
                    const float uu = s_u[k][c];
                    const float ddt = fmaf(uu, dx, dq) * s_dsp[k][c];
                    s_du[k][c] = fmaf(dt, dx, Dd * dy);
                    s_dd[k][c] = ddt;
                    dbias_acc += ddt;
                    dD = fmaf(dy, uu, dD);
                }
            }
            store_channel_sums(dB, s_rB[warp], k0, g, lane);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < SEG * CH; i += NTHREADS) {
            int k = i / CH, cc = i % CH, t = t0 + k, dd = d0 + cc;
            if (t < L && dd < Dm) {
                long long o = (long long)t * Dm + dd;
                du[o] = from_f32(s_du[k][cc]);
                ddelta[o] = from_f32(s_dd[k][cc]);
                if (HAS_Z) dz[o] = from_f32(s_dz[k][cc]);
            }
        }
        for (int i = threadIdx.x; i < SEG * NSTATE; i += NTHREADS) {
            int k = i / NSTATE, n = i % NSTATE, t = t0 + k;
            if (t < L) {
                float vb = 0.f, vc = 0.f;
#pragma unroll
                for (int w = 0; w < NWARPS; ++w) { vb += s_rB[w][k][n]; vc += s_rC[w][k][n]; }
                dB_part[(long long)t * NSTATE + n] = vb;
                dC_part[(long long)t * NSTATE + n] = vc;
            }
        }
    }
    if (d_ok) {
#pragma unroll
        for (int j = 0; j < SPT; ++j)
            if (g * SPT + j < NSTATE) dA_part[(b * Dm + d) * NSTATE + g * SPT + j] = dA[j];
        if (g == 0) { dD_part[b * Dm + d] = dD; dbias_part[b * Dm + d] = dbias_acc; }
    }
}
