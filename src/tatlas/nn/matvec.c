/* One row times a weight matrix, y = W x (+ b), for the batch-1 decode step: W is row-major
 * [N, K] (float32, or bfloat16 with a bfloat16 x and y and float32 accumulation). Built by
 * tatlas/nn/matvec.py with the host's own instruction set (-march=native), loaded with ctypes.
 *
 * A decode step reads every weight once, so it runs at the speed the memory streams W; each
 * thread takes a contiguous share of the rows and walks four rows side by side (four streams, the
 * x chunk loaded once for all four), or with AVX2 and bfloat16 one row after another (see
 * row_bf16). No packing, no per-call set-up: the few-microsecond call is what makes this faster
 * than a general GEMM on the 1 x 896 x 896 products of a small model.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define TATLAS_ISA 2
#elif defined(__AVX2__) && defined(__FMA__)
#define TATLAS_ISA 1
#else
#define TATLAS_ISA 0
#endif

/* 0: no kernel here (the caller keeps its GEMM); 1: AVX2 + FMA; 2: AVX-512 (+ 4 if AVX512-BF16) */
int tatlas_matvec_isa(void) {
#if TATLAS_ISA == 2 && defined(__AVX512BF16__)
  return TATLAS_ISA + 4;
#else
  return TATLAS_ISA;
#endif
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, NaN stays NaN */
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

#if TATLAS_ISA == 2
#define GROUP 4

static inline __m512 load_f32(const float *p, int64_t left) {
  return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1u), p);
}

/* 16 bfloat16 values widened to float32 (a bfloat16 is the top half of a float32) */
static inline __m512 load_bf16(const uint16_t *p, int64_t left) {
  __m256i h = left >= 16 ? _mm256_loadu_si256((const __m256i *)p)
                         : _mm256_maskz_loadu_epi16((__mmask16)((1u << left) - 1u), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void rows_f32(const float *W, const float *x, float *acc, int64_t rows, int64_t K) {
  __m512 a[GROUP];
  for (int r = 0; r < GROUP; r++) a[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    __m512 xv = load_f32(x + k, K - k);
    for (int r = 0; r < rows; r++) {
      a[r] = _mm512_fmadd_ps(load_f32(W + r * K + k, K - k), xv, a[r]);
    }
  }
  for (int r = 0; r < rows; r++) acc[r] = _mm512_reduce_add_ps(a[r]);
}

static inline __attribute__((always_inline)) void rows_bf16(const uint16_t *W, const uint16_t *x, float *acc, int64_t rows, int64_t K) {
  __m512 a[GROUP];
  for (int r = 0; r < GROUP; r++) a[r] = _mm512_setzero_ps();
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + 32 <= K; k += 32) { /* pairs of products summed into float32 lanes */
    __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(x + k));
    for (int r = 0; r < rows; r++) {
      a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_loadu_si512((const void *)(W + r * K + k)), xv);
    }
  }
#endif
  for (; k < K; k += 16) {
    __m512 xv = load_bf16(x + k, K - k);
    for (int r = 0; r < rows; r++) a[r] = _mm512_fmadd_ps(load_bf16(W + r * K + k, K - k), xv, a[r]);
  }
  for (int r = 0; r < rows; r++) acc[r] = _mm512_reduce_add_ps(a[r]);
}

#elif TATLAS_ISA == 1
#define GROUP 4

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void rows_f32(const float *W, const float *x, float *acc, int64_t rows, int64_t K) {
  __m256 a[GROUP];
  for (int r = 0; r < GROUP; r++) a[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv = _mm256_loadu_ps(x + k);
    for (int r = 0; r < rows; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(W + r * K + k), xv, a[r]);
  }
  for (int r = 0; r < rows; r++) {
    float s = hsum256(a[r]);
    for (int64_t j = k; j < K; j++) s += W[r * K + j] * x[j];
    acc[r] = s;
  }
}

/* x's bfloat16 values as float32, each 16 reordered even-then-odd ([x0 x2 .. x14, x1 x3 .. x15]):
 * sixteen bfloat16 weights, loaded as eight 32-bit lanes, widen with one shift (the even ones) and
 * one mask (the odd ones) and meet their x lanes directly. The tail past the last 16 stays in order. */
static void split_bf16(const uint16_t *x, float *xs, int64_t K) {
  int64_t k = 0;
  for (; k + 16 <= K; k += 16)
    for (int i = 0; i < 8; i++) xs[k + i] = bf16_to_f32(x[k + 2 * i]), xs[k + 8 + i] = bf16_to_f32(x[k + 2 * i + 1]);
  for (; k < K; k++) xs[k] = bf16_to_f32(x[k]);
}

/* one bfloat16 row against the split x: a single stream through memory (four rows side by side,
 * as for float32, start three new streams every few hundred bytes of a short bfloat16 row, which
 * this machine's prefetchers follow badly: 896-column rows at 17-21 GB/s that way, 25-35 this way),
 * with an explicit prefetch 1 KB ahead that runs on into the next row */
static inline float row_bf16(const uint16_t *w, const float *xs, int64_t K) {
  const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    _mm_prefetch((const char *)(w + k + 512), _MM_HINT_T0);
    __m256i v = _mm256_loadu_si256((const __m256i *)(w + k)), u = _mm256_loadu_si256((const __m256i *)(w + k + 16));
    a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(xs + k), a0);
    b0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi)), _mm256_loadu_ps(xs + k + 8), b0);
    a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(u, 16)), _mm256_loadu_ps(xs + k + 16), a1);
    b1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(u, hi)), _mm256_loadu_ps(xs + k + 24), b1);
  }
  if (k + 16 <= K) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(w + k));
    a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(xs + k), a0);
    b0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, hi)), _mm256_loadu_ps(xs + k + 8), b0);
    k += 16;
  }
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(b0, b1)));
  for (; k < K; k++) s += bf16_to_f32(w[k]) * xs[k];
  return s;
}
#endif

#if TATLAS_ISA > 0
/* y[N] = W[N, K] x[K] (+ b[N]); b may be NULL; `threads` OpenMP threads share the rows */
void tatlas_matvec_f32(const float *W, const float *x, const float *b, float *y, int64_t N, int64_t K, int threads) {
  int64_t groups = (N + GROUP - 1) / GROUP;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t g = 0; g < groups; g++) {
    int64_t n = g * GROUP, rows = N - n < GROUP ? N - n : GROUP;
    float acc[GROUP];
    if (rows == GROUP) rows_f32(W + n * K, x, acc, GROUP, K); /* a constant count: the accumulators stay in registers */
    else rows_f32(W + n * K, x, acc, rows, K);
    for (int64_t r = 0; r < rows; r++) y[n + r] = b ? acc[r] + b[n + r] : acc[r];
  }
}

/* the same for bfloat16; returns 0, or -1 (y not written) when the float32 copy of x cannot be allocated */
int tatlas_matvec_bf16(const uint16_t *W, const uint16_t *x, const uint16_t *b, uint16_t *y, int64_t N, int64_t K,
                       int threads) {
#if TATLAS_ISA == 2
  int64_t groups = (N + GROUP - 1) / GROUP;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t g = 0; g < groups; g++) {
    int64_t n = g * GROUP, rows = N - n < GROUP ? N - n : GROUP;
    float acc[GROUP];
    if (rows == GROUP) rows_bf16(W + n * K, x, acc, GROUP, K);
    else rows_bf16(W + n * K, x, acc, rows, K);
    for (int64_t r = 0; r < rows; r++) y[n + r] = f32_to_bf16(b ? acc[r] + bf16_to_f32(b[n + r]) : acc[r]);
  }
#else
  float *xs = malloc((size_t)K * sizeof(float));
  if (xs == NULL) return -1;
  split_bf16(x, xs, K);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float acc = row_bf16(W + n * K, xs, K);
    y[n] = f32_to_bf16(b ? acc + bf16_to_f32(b[n]) : acc);
  }
  free(xs);
#endif
  return 0;
}
#endif
