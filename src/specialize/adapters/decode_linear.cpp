// y = x @ w.T for the few rows of a decoding step (x: M x K, w: N x K, both row-major fp32).
//
// With M <= 16 a BLAS sgemm spends most of its time packing the weight, which is read from
// memory once per step anyway; here each weight row is loaded once and multiplied with every row
// of x while it is in registers (8 rows of x at a time, 8 accumulators). Every y[m][n] is summed
// over k in one fixed order (8 lanes of FMAs, then the lanes added in a fixed tree) whatever M
// is, so a row's result does not depend on the other rows of the batch: a request batched with
// others gets bit-identical logits to the same request alone.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>

namespace {

constexpr int kRows = 8;  // rows of x per tile (8 accumulators + a weight and an x register)

inline float lane_sum(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 odd = _mm_movehdup_ps(half);
    __m128 pairs = _mm_add_ps(half, odd);
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehl_ps(odd, pairs)));
}

template <int rows>
inline void tile(const float *x, const float *w, float *y, int64_t N, int64_t K) {
    __m256 acc[rows];
    for (int i = 0; i < rows; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
        __m256 weight = _mm256_loadu_ps(w + k);
        for (int i = 0; i < rows; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * K + k), weight, acc[i]);
    }
    for (int i = 0; i < rows; i++) y[i * N] = lane_sum(acc[i]);
}

template <int rows>
void columns(const float *x, const float *w, float *y, int64_t N, int64_t K, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) tile<rows>(x, w + n * K, y + n, N, K);
}

// Output columns [n0, n1) for every row of x, in tiles of 8 rows and one tile of the rest.
void block(const float *x, const float *w, float *y, int64_t M, int64_t N, int64_t K, int64_t n0,
           int64_t n1) {
    int64_t m = 0;
    for (; m + kRows <= M; m += kRows) columns<kRows>(x + m * K, w, y + m * N, N, K, n0, n1);
    const float *xr = x + m * K;
    float *yr = y + m * N;
    switch (M - m) {
        case 1: columns<1>(xr, w, yr, N, K, n0, n1); break;
        case 2: columns<2>(xr, w, yr, N, K, n0, n1); break;
        case 3: columns<3>(xr, w, yr, N, K, n0, n1); break;
        case 4: columns<4>(xr, w, yr, N, K, n0, n1); break;
        case 5: columns<5>(xr, w, yr, N, K, n0, n1); break;
        case 6: columns<6>(xr, w, yr, N, K, n0, n1); break;
        case 7: columns<7>(xr, w, yr, N, K, n0, n1); break;
        default: break;
    }
}

}  // namespace

// The output columns are split between `threads` OpenMP threads (loaded into a process that has
// torch, this shares torch's own OpenMP runtime and its thread pool). K must be a multiple of 8.
extern "C" void decode_linear(const float *x, const float *w, float *y, int64_t M, int64_t N,
                              int64_t K, int threads) {
    if (threads <= 1) {
        block(x, w, y, M, N, K, 0, N);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
        int64_t per = (N + parts - 1) / parts;
        int64_t n0 = part * per, n1 = n0 + per < N ? n0 + per : N;
        if (n0 < n1) block(x, w, y, M, N, K, n0, n1);
    }
}
