/* One row times a weight matrix, y = W x (+ b), for the batch-1 decode step (and a few rows at once,
 * tatlas_matmat, for a step of several sequences): W is row-major
 * [N, K] (float32, or bfloat16 with a bfloat16 x and y and float32 accumulation). Built by
 * tatlas/nn/matvec.py with the host's own instruction set (-march=native), loaded with ctypes.
 *
 * A decode step reads every weight once, so it runs at the speed the memory streams W; each
 * thread takes a contiguous share of the rows and walks them one after another (AVX-512, and AVX2
 * with bfloat16: see row_f32, row_bf16_512 and row_bf16), or with AVX2 and float32 four side by
 * side (four streams, the x chunk loaded once for all four). No packing, no per-call set-up: the
 * few-microsecond call is what makes this faster than a general GEMM on the 1 x 896 x 896 products
 * of a small model.
 */
#include <math.h>
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

/* v as the dtype holds it (bfloat16: rounded); element i of a vector of the dtype, as float32 */
static inline float rnd(float v, int bf16) { return bf16 ? bf16_to_f32(f32_to_bf16(v)) : v; }
static inline float ld(const void *p, int64_t i, int bf16) {
  return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

#if TATLAS_ISA > 0
/* the sum of a 256-bit vector's eight floats */
static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

#if TATLAS_ISA == 2

static inline __m512 load_f32(const float *p, int64_t left) {
  return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1u), p);
}

/* 16 bfloat16 values widened to float32 (a bfloat16 is the top half of a float32) */
static inline __m512 load_bf16(const uint16_t *p, int64_t left) {
  __m256i h = left >= 16 ? _mm256_loadu_si256((const __m256i *)p)
                         : _mm256_maskz_loadu_epi16((__mmask16)((1u << left) - 1u), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* One row against x, AVX-512: a single stream through memory, two accumulators. Four rows side by
 * side (as the AVX2 float32 path walks them) read the Qwen2.5-0.5B shape's projections in decode
 * order at 23-28 GB/s (float32) and 19-22 GB/s (bfloat16) on a Zen 4 EPYC, one row at a time at
 * 27-30 and 25-28 (benchmarks/bench_matvec_variants.py, 7 alternating rounds); a software prefetch
 * 0.5-1 KB ahead, which the AVX2 bfloat16 path needs, cost it 25-35% there. */
static inline float row_f32(const float *w, const float *x, int64_t K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), a1);
  }
  for (; k < K; k += 16) a0 = _mm512_fmadd_ps(load_f32(w + k, K - k), load_f32(x + k, K - k), a0);
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static inline float row_bf16_512(const uint16_t *w, const uint16_t *x, int64_t K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + 64 <= K; k += 64) { /* pairs of products summed into float32 lanes */
    a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w + k)),
                          (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
    a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(w + k + 32)),
                          (__m512bh)_mm512_loadu_si512((const void *)(x + k + 32)));
  }
  for (; k + 32 <= K; k += 32)
    a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w + k)),
                          (__m512bh)_mm512_loadu_si512((const void *)(x + k)));
#endif
  for (; k < K; k += 16) a1 = _mm512_fmadd_ps(load_bf16(w + k, K - k), load_bf16(x + k, K - k), a1);
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* Several rows of x against one weight row, or two (a decode step of several sequences): each
 * weight row is read from memory once for all of them (and with two, each x chunk loaded once for
 * both); an accumulator per (weight row, x row). `nr` (1..MAX_ROWS) is a constant where dot_rows
 * inlines these, so the accumulators stay in registers. W: one or two rows of K values one after
 * the other; X: nr rows, ldx apart; out[i * ldo + r] = W[i] . X[r]. */
#define MAX_ROWS 8

/* the k loop from k on, 16 values a step, each loaded (bfloat16: and widened) by LOAD: one weight
 * row against nr rows of x (accumulators a), or two (a and c), each x chunk loaded once */
#define ROWS1_FMA(LOAD)                                                       \
  for (; k < K; k += 16) {                                                    \
    __m512 wv = LOAD(w + k, K - k);                                           \
    for (int r = 0; r < nr; r++)                                              \
      a[r] = _mm512_fmadd_ps(wv, LOAD(X + r * ldx + k, K - k), a[r]);         \
  }
#define ROWS2_FMA(LOAD)                                          \
  for (; k < K; k += 16) {                                       \
    __m512 w0 = LOAD(w + k, K - k), w1 = LOAD(w + K + k, K - k); \
    for (int r = 0; r < nr; r++) {                               \
      __m512 xv = LOAD(X + r * ldx + k, K - k);                  \
      a[r] = _mm512_fmadd_ps(w0, xv, a[r]);                      \
      c[r] = _mm512_fmadd_ps(w1, xv, c[r]);                      \
    }                                                            \
  }

static inline __attribute__((always_inline)) void rows_f32_512(const float *w, const float *X, int64_t ldx, int nr,
                                                               int64_t K, float *out, int64_t ldo) {
  (void)ldo;
  __m512 a[MAX_ROWS];
  for (int r = 0; r < nr; r++) a[r] = _mm512_setzero_ps();
  int64_t k = 0;
  ROWS1_FMA(load_f32)
  for (int r = 0; r < nr; r++) out[r] = _mm512_reduce_add_ps(a[r]);
}

static inline __attribute__((always_inline)) void rows2_f32_512(const float *w, const float *X, int64_t ldx, int nr,
                                                                int64_t K, float *out, int64_t ldo) {
  __m512 a[MAX_ROWS], c[MAX_ROWS];
  for (int r = 0; r < nr; r++) a[r] = c[r] = _mm512_setzero_ps();
  int64_t k = 0;
  ROWS2_FMA(load_f32)
  for (int r = 0; r < nr; r++) out[r] = _mm512_reduce_add_ps(a[r]), out[ldo + r] = _mm512_reduce_add_ps(c[r]);
}

/* bfloat16: pairs of products summed into float32 lanes (AVX512-BF16) 32 values a step, the rest
 * (and without it, everything) widened to float32 */
static inline __attribute__((always_inline)) void rows_bf16_multi(const uint16_t *w, const uint16_t *X, int64_t ldx,
                                                                  int nr, int64_t K, float *out, int64_t ldo) {
  (void)ldo;
  __m512 a[MAX_ROWS];
  for (int r = 0; r < nr; r++) a[r] = _mm512_setzero_ps();
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + 32 <= K; k += 32) {
    __m512bh wv = (__m512bh)_mm512_loadu_si512((const void *)(w + k));
    for (int r = 0; r < nr; r++)
      a[r] = _mm512_dpbf16_ps(a[r], wv, (__m512bh)_mm512_loadu_si512((const void *)(X + r * ldx + k)));
  }
#endif
  ROWS1_FMA(load_bf16)
  for (int r = 0; r < nr; r++) out[r] = _mm512_reduce_add_ps(a[r]);
}

static inline __attribute__((always_inline)) void rows2_bf16_multi(const uint16_t *w, const uint16_t *X, int64_t ldx,
                                                                   int nr, int64_t K, float *out, int64_t ldo) {
  __m512 a[MAX_ROWS], c[MAX_ROWS];
  for (int r = 0; r < nr; r++) a[r] = c[r] = _mm512_setzero_ps();
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + 32 <= K; k += 32) {
    __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(w + k));
    __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(w + K + k));
    for (int r = 0; r < nr; r++) {
      __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)(X + r * ldx + k));
      a[r] = _mm512_dpbf16_ps(a[r], w0, xv);
      c[r] = _mm512_dpbf16_ps(c[r], w1, xv);
    }
  }
#endif
  ROWS2_FMA(load_bf16)
  for (int r = 0; r < nr; r++) out[r] = _mm512_reduce_add_ps(a[r]), out[ldo + r] = _mm512_reduce_add_ps(c[r]);
}

/* out[i * ldo + r] = W[i] . X[r] for wr (1, 2) weight rows and B rows of X, by groups of at most
 * MAX_ROWS (the weight rows stay in the cache between groups); bf16: bfloat16, else float32 */
#define ROWS_CASE(fn, T, c) \
  case c: fn((const T *)w, (const T *)X + r0 * ldx, ldx, c, K, out + r0, ldo); break;
#define ROWS_SWITCH(fn, T)                                                                          \
  switch (nr) {                                                                                     \
    ROWS_CASE(fn, T, 1) ROWS_CASE(fn, T, 2) ROWS_CASE(fn, T, 3) ROWS_CASE(fn, T, 4)                 \
    ROWS_CASE(fn, T, 5) ROWS_CASE(fn, T, 6) ROWS_CASE(fn, T, 7) default: ROWS_CASE(fn, T, MAX_ROWS) \
  }
static void dot_rows(const void *w, int wr, const void *X, int64_t ldx, int64_t B, int64_t K, int bf16, float *out,
                     int64_t ldo) {
  for (int64_t r0 = 0; r0 < B; r0 += MAX_ROWS) {
    const int nr = B - r0 < MAX_ROWS ? (int)(B - r0) : MAX_ROWS;
    if (bf16 && wr == 2) { ROWS_SWITCH(rows2_bf16_multi, uint16_t) }
    else if (bf16) { ROWS_SWITCH(rows_bf16_multi, uint16_t) }
    else if (wr == 2) { ROWS_SWITCH(rows2_f32_512, float) }
    else { ROWS_SWITCH(rows_f32_512, float) }
  }
}

#elif TATLAS_ISA == 1
#define GROUP 4

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
/* the dot product of two float32 vectors of n values (an attention score) */
static inline float dot_f32(const float *a, const float *b, int64_t n) {
#if TATLAS_ISA == 2
  return row_f32(a, b, n);
#else
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  float s = hsum256(acc);
  for (; k < n; k++) s += a[k] * b[k];
  return s;
#endif
}
#endif

#if TATLAS_ISA > 0
/* y[N] = W[N, K] x[K] (+ b[N]); b may be NULL; `threads` OpenMP threads share the rows */
void tatlas_matvec_f32(const float *W, const float *x, const float *b, float *y, int64_t N, int64_t K, int threads) {
#if TATLAS_ISA == 2
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float acc = row_f32(W + n * K, x, K);
    y[n] = b ? acc + b[n] : acc;
  }
#else
  int64_t groups = (N + GROUP - 1) / GROUP;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t g = 0; g < groups; g++) {
    int64_t n = g * GROUP, rows = N - n < GROUP ? N - n : GROUP;
    float acc[GROUP];
    if (rows == GROUP) rows_f32(W + n * K, x, acc, GROUP, K); /* a constant count: the accumulators stay in registers */
    else rows_f32(W + n * K, x, acc, rows, K);
    for (int64_t r = 0; r < rows; r++) y[n + r] = b ? acc[r] + b[n + r] : acc[r];
  }
#endif
}

/* bfloat16 W [N, K] times bfloat16 x (+ b), accumulated in float32; each result rounded to
 * bfloat16 and written to y16, or (y16 NULL) to yf as a float32 holding that bfloat16 value.
 * xs: K floats of scratch (the AVX2 path's reordered x). */
static void matvec_bf16(const uint16_t *W, const uint16_t *x, float *xs, const uint16_t *b, uint16_t *y16, float *yf,
                        int64_t N, int64_t K, int threads) {
#if TATLAS_ISA == 2
  (void)xs;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float acc = row_bf16_512(W + n * K, x, K);
    uint16_t h = f32_to_bf16(b ? acc + bf16_to_f32(b[n]) : acc);
    if (y16) y16[n] = h; else yf[n] = bf16_to_f32(h);
  }
#else
  split_bf16(x, xs, K);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float acc = row_bf16(W + n * K, xs, K);
    uint16_t h = f32_to_bf16(b ? acc + bf16_to_f32(b[n]) : acc);
    if (y16) y16[n] = h; else yf[n] = bf16_to_f32(h);
  }
#endif
}

#if TATLAS_ISA == 2
/* Y[r, n] = W[n] . X[r] (+ b[n]) for B rows (a step of several sequences): X float32, or with bf16
 * bfloat16 (W and b the same dtype), rows ldx apart; each result rounded as the dtype and stored
 * to Yf (float32, rows ldy apart) or, Yf NULL, to Y16 (bfloat16). Each weight row is read from
 * memory once for all B rows (dot_rows). */
static void matmat(const void *W, const void *X, int64_t ldx, const void *b, float *Yf, uint16_t *Y16, int64_t ldy,
                   int64_t B, int64_t N, int64_t K, int bf, int threads) {
  const size_t size = bf ? 2 : 4;
  /* Two weight rows at a time (the last alone if N is odd), each x chunk loaded once for both, for
   * more than MAX_ROWS rows, or from 4 rows on when a weight row is 4 KB or longer; else one at a
   * time: two streams side by side read short rows slower (as for one row). From memory, 2 threads,
   * Zen 4 EPYC, GB/s of weights one at a time / two (benchmarks/RESULTS.md): 896 x 4864 at 4 and 8
   * rows 16.3 / 20.3 and 11.7 / 16.6, 384 x 1536 at 8 rows 10.4 / 13.6; but 4864 x 896 at 4 rows
   * 24.3 / 16.3 and Whisper's 51865 x 384 head at 4 and 8 rows 22.7 / 14.1 and 19.6 / 12.3. */
  const int64_t step = B > MAX_ROWS || (B >= 4 && K * (int64_t)size >= 4096) ? 2 : 1;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t at = 0; at < (N + step - 1) / step; at++) {
    const int64_t n = at * step;
    const int wr = N - n >= step ? (int)step : 1;
    float out[2 * 4 * MAX_ROWS];
    for (int64_t r0 = 0; r0 < B; r0 += 4 * MAX_ROWS) {
      const int64_t nr = B - r0 < 4 * MAX_ROWS ? B - r0 : 4 * MAX_ROWS;
      dot_rows((const char *)W + n * K * size, wr, (const char *)X + r0 * ldx * size, ldx, nr, K, bf, out,
               4 * MAX_ROWS);
      for (int i = 0; i < wr; i++) {
        const float bias = b == NULL ? 0.f : ld(b, n + i, bf);
        for (int64_t r = 0; r < nr; r++) {
          float y = rnd(out[i * 4 * MAX_ROWS + r] + bias, bf);
          if (Yf) Yf[(r0 + r) * ldy + n + i] = y;
          else Y16[(r0 + r) * ldy + n + i] = f32_to_bf16(y);
        }
      }
    }
  }
}
#endif

/* Y[B, N] = X[B, K] W[N, K]^T (+ b) for a few rows, float32 or (bf16) bfloat16 in and out; returns
 * 0, or -1 (nothing written) without AVX-512 (the caller keeps its GEMM) */
int tatlas_matmat(const void *W, const void *X, const void *b, void *Y, int64_t B, int64_t N, int64_t K, int bf16,
                  int threads) {
#if TATLAS_ISA == 2
  matmat(W, X, K, b, bf16 ? NULL : (float *)Y, bf16 ? (uint16_t *)Y : NULL, N, B, N, K, bf16, threads);
  return 0;
#else
  (void)W, (void)X, (void)b, (void)Y, (void)B, (void)N, (void)K, (void)bf16, (void)threads;
  return -1;
#endif
}

/* the same for bfloat16 in and out; returns 0, or -1 (y not written) when the float32 copy of x cannot be allocated */
int tatlas_matvec_bf16(const uint16_t *W, const uint16_t *x, const uint16_t *b, uint16_t *y, int64_t N, int64_t K,
                       int threads) {
  float *xs = malloc((size_t)K * sizeof(float));
  if (xs == NULL) return -1;
  matvec_bf16(W, x, xs, b, y, NULL, N, K, threads);
  free(xs);
  return 0;
}

/* ---- llama.cpp's 4- and 8-bit blocks, read as stored (GGUF Q4_0/Q4_1, Q8_0/Q5_0; nn/quant_blocks.py) ----
 * Rows of K values (K a multiple of 32) in groups of 32, each group with its own float32 scale:
 * q4: K/2 bytes a row, a group's 16 bytes holding its value j in the low nibble of byte j and value
 *     j + 16 in the high nibble (ggml's order), q in 0..15: w = q * scale + offset;
 * q8: K int8 a row: w = q * scale.
 * x, b, y float32; each group's dot product is float32, scaled, and summed in float32. */
static inline __m256 u8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }

static inline float row_q4(const uint8_t *w, const float *scale, const float *offset, const float *x,
                           const float *xsum, int64_t groups) {
  const __m128i low = _mm_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  float shift = 0.f;
  for (int64_t g = 0; g < groups; g++) {
    __m128i v = _mm_loadu_si128((const __m128i *)(w + 16 * g));
    __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
    const float *xg = x + 32 * g;
    __m256 d = _mm256_mul_ps(u8x8(lo), _mm256_loadu_ps(xg));
    d = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(xg + 8), d);
    d = _mm256_fmadd_ps(u8x8(hi), _mm256_loadu_ps(xg + 16), d);
    d = _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(xg + 24), d);
    acc = _mm256_fmadd_ps(d, _mm256_set1_ps(scale[g]), acc);
    shift += offset[g] * xsum[g];
  }
  return hsum256(acc) + shift;
}

static inline __m256 i8x8(const int8_t *p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

static inline float row_q8(const int8_t *w, const float *scale, const float *x, int64_t groups) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; g++) {
    const int8_t *wg = w + 32 * g;
    const float *xg = x + 32 * g;
    __m256 d = _mm256_mul_ps(i8x8(wg), _mm256_loadu_ps(xg));
    d = _mm256_fmadd_ps(i8x8(wg + 8), _mm256_loadu_ps(xg + 8), d);
    d = _mm256_fmadd_ps(i8x8(wg + 16), _mm256_loadu_ps(xg + 16), d);
    d = _mm256_fmadd_ps(i8x8(wg + 24), _mm256_loadu_ps(xg + 24), d);
    acc = _mm256_fmadd_ps(d, _mm256_set1_ps(scale[g]), acc);
  }
  return hsum256(acc);
}

/* y[N] = W x (+ b) for q4 rows (K whole groups); xsum: K/32 floats of scratch (x's group sums) */
static void matvec_q4(const uint8_t *W, const float *scale, const float *offset, const float *x, const float *b,
                      float *y, int64_t N, int64_t K, float *xsum, int threads) {
  const int64_t groups = K / 32;
  for (int64_t g = 0; g < groups; g++) {
    float s = 0.f;
    for (int i = 0; i < 32; i++) s += x[32 * g + i];
    xsum[g] = s;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float a = row_q4(W + n * (K / 2), scale + n * groups, offset + n * groups, x, xsum, groups);
    y[n] = b ? a + b[n] : a;
  }
}

/* the same as a call of its own; returns 0, or -1 (y not written) when K is not whole groups or
 * the scratch cannot be allocated */
int tatlas_matvec_q4(const uint8_t *W, const float *scale, const float *offset, const float *x, const float *b,
                     float *y, int64_t N, int64_t K, int threads) {
  if (K % 32) return -1;
  float *xsum = malloc((size_t)(K / 32 + 1) * sizeof(float));
  if (xsum == NULL) return -1;
  matvec_q4(W, scale, offset, x, b, y, N, K, xsum, threads);
  free(xsum);
  return 0;
}

/* y[N] = W x (+ b) for q8 rows; returns 0, or -1 (y not written) when K is not whole groups */
int tatlas_matvec_q8(const int8_t *W, const float *scale, const float *x, const float *b, float *y, int64_t N,
                     int64_t K, int threads) {
  if (K % 32) return -1;
  const int64_t groups = K / 32;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n = 0; n < N; n++) {
    float a = row_q8(W + n * K, scale + n * groups, x, groups);
    y[n] = b ? a + b[n] : a;
  }
  return 0;
}

/* ---- One whole decode layer -------------------------------------------------------------------
 * A pre-RMSNorm block of rotary grouped-query attention and a gated SiLU MLP (Llama, Qwen2,
 * Mistral), or a classic one (GPT-2, Whisper's decoder with its cross-attention), for one token of
 * one sequence or of several (each weight row read once for all: matmat), in one call: the ~60
 * small torch ops of such a layer's step (norms, rotary, the cache write, attention over the
 * cache, residuals, the gate) cost more than their arithmetic, so a batch-1 step spent ~20% of its
 * time outside the weight reads (Whisper tiny.en's: ~40%).
 * Every value is computed in float32; in bfloat16 mode each intermediate result is rounded to
 * bfloat16 where the torch path rounds it (after every op), so both paths agree as closely as
 * two bfloat16 computations can. Weights, norm weights, biases, the cache and x are in the
 * model's dtype; cos/sin are float32. */

typedef struct {
  int64_t dim, heads, kv_heads, head_dim, hidden;
  int32_t bf16, qkv_joined, gate_up_joined; /* joined: the matrices lie one after the other */
  float attn_eps, attn_offset, mlp_eps, mlp_offset, scale;
  const void *attn_norm, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *mlp_norm, *wg, *wu, *wd;
  /* per product (q, k, v, out, gate, up, down): 0 the model's dtype (as above), 1 q4, 2 q8 (float32
   * models only; the w* pointer is then the blocks', with their scales and q4's offsets here) */
  int32_t format[7];
  const float *scales[7], *offsets[7];
  /* classic: the block of GPT-2, ImageGPT, the Decision Transformer and Whisper's decoder instead:
   * a two-layer MLP wd(act(wu h + bu)) + bd (biases NULL: none; wg unused; every product in the
   * model's dtype), act 0 exact GELU, 1 its tanh form, 2 quick GELU, 3 ReLU. layer_norm: the norms
   * are LayerNorms, (x - mean) / sqrt(var + eps) * w + b (attn_norm_b, mlp_norm_b; NULL: none).
   * No rotary where R is 0. cross: a cross-attention sublayer between attention and MLP,
   * x + wco(attend(wcq norm(x) + bcq, keys/values cached from the source)) + bco, its norm
   * cross_norm(_b) with cross_eps, its heads as the self-attention's, its own scale. */
  int32_t classic, act, layer_norm, cross;
  float cross_eps, cross_offset, cross_scale;
  const void *attn_norm_b, *mlp_norm_b, *bu, *bd, *cross_norm, *cross_norm_b, *wcq, *bcq, *wco, *bco;
} tatlas_layer;

enum { P_Q, P_K, P_V, P_O, P_GATE, P_UP, P_DOWN };

#define SMALL_BYTES (1 << 18) /* below this many bytes a product runs on one thread (as in matvec.py) */


/* Y[r] = W X[r] + b (product `which`) for B rows of float32 X holding values of the model's dtype
 * (rows ldx apart; Y's ldy apart), each value rounded as the output dtype. One row, or a GGUF block
 * format, or no AVX-512: one matrix-vector product per row; else every weight row read once for
 * all B (dot_rows). x16: B * K bfloat16 of scratch, xs: K floats. */
static void project(const tatlas_layer *L, int which, const void *W, const void *b, const float *X, int64_t ldx,
                    float *Y, int64_t ldy, int64_t B, int64_t N, int64_t K, uint16_t *x16, float *xs, int threads) {
  const int format = L->format[which], bf = L->bf16;
  int64_t bytes = format == 1 ? N * K / 2 : format == 2 ? N * K : N * K * (bf ? 2 : 4);
  int t = bytes * B < SMALL_BYTES ? 1 : threads;
#if TATLAS_ISA == 2
  if (B > 1 && format == 0) {
    const void *Xr = X;
    if (bf) { /* exact: X holds bfloat16 values */
      for (int64_t r = 0; r < B; r++)
        for (int64_t k = 0; k < K; k++) x16[r * K + k] = f32_to_bf16(X[r * ldx + k]);
      Xr = x16, ldx = K;
    }
    matmat(W, Xr, ldx, b, Y, NULL, ldy, B, N, K, bf, t);
    return;
  }
#endif
  for (int64_t r = 0; r < B; r++) {
    const float *x = X + r * ldx;
    float *y = Y + r * ldy;
    if (format == 1) { /* K was checked whole groups when planned; xs holds x's group sums */
      matvec_q4(W, L->scales[which], L->offsets[which], x, b, y, N, K, xs, t);
    } else if (format == 2) {
      tatlas_matvec_q8(W, L->scales[which], x, b, y, N, K, t);
    } else if (!bf) {
      tatlas_matvec_f32((const float *)W, x, (const float *)b, y, N, K, t);
    } else {
      for (int64_t k = 0; k < K; k++) x16[k] = f32_to_bf16(x[k]); /* exact: x holds bfloat16 values */
      matvec_bf16((const uint16_t *)W, x16, xs, (const uint16_t *)b, NULL, y, N, K, t);
    }
  }
}

/* y = x / rms(x) * (offset + w), as RMSNorm computes it, or with `layer` LayerNorm's
 * (x - mean) / sqrt(var + eps) * w + b (b NULL: none): float32, rounded once at the end */
static void norm(const float *x, const void *w, const void *b, float offset, float eps, int layer, float *y, int64_t C,
                 int bf16) {
  if (!layer) {
    float ss = 0.f;
    for (int64_t i = 0; i < C; i++) ss += x[i] * x[i];
    float r = 1.f / sqrtf(ss / (float)C + eps);
    for (int64_t i = 0; i < C; i++) y[i] = rnd(x[i] * r * (offset + ld(w, i, bf16)), bf16);
    return;
  }
  float mean = 0.f, var = 0.f;
  for (int64_t i = 0; i < C; i++) mean += x[i];
  mean /= (float)C;
  for (int64_t i = 0; i < C; i++) var += (x[i] - mean) * (x[i] - mean);
  float r = 1.f / sqrtf(var / (float)C + eps);
  for (int64_t i = 0; i < C; i++) y[i] = rnd((x[i] - mean) * r * ld(w, i, bf16) + (b ? ld(b, i, bf16) : 0.f), bf16);
}

/* the classic MLP's activation in place (tatlas_layer's act), each value rounded as the dtype */
static void activate(float *x, int64_t n, int act, int bf16) {
  switch (act) {
  case 0: /* exact GELU, x Phi(x) */
    for (int64_t i = 0; i < n; i++) x[i] = rnd(0.5f * x[i] * (1.f + erff(x[i] * 0.7071067811865476f)), bf16);
    break;
  case 1: /* GELU's tanh approximation */
    for (int64_t i = 0; i < n; i++)
      x[i] = rnd(0.5f * x[i] * (1.f + tanhf(0.7978845608028654f * (x[i] + 0.044715f * x[i] * x[i] * x[i]))), bf16);
    break;
  case 2: /* quick GELU, x sigmoid(1.702 x), rounded after each op as torch's three ops round */
    for (int64_t i = 0; i < n; i++) x[i] = rnd(x[i] * rnd(1.f / (1.f + expf(-rnd(1.702f * x[i], bf16))), bf16), bf16);
    break;
  default: /* ReLU */
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.f ? x[i] : 0.f;
  }
}

/* rotate the first R channels of each of n heads of width D in place (x * cos + rotate(x) * sin) */
static void rotary(float *x, int64_t n, int64_t D, int64_t R, const float *cos, const float *sin, int interleaved,
                   int bf16) {
  for (int64_t h = 0; h < n; h++) {
    float *v = x + h * D;
    if (interleaved) {
      for (int64_t i = 0; i < R; i += 2) {
        float a = v[i], b = v[i + 1];
        v[i] = rnd(a * cos[i] + -b * sin[i], bf16);
        v[i + 1] = rnd(b * cos[i + 1] + a * sin[i + 1], bf16);
      }
    } else {
      int64_t half = R / 2;
      for (int64_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = rnd(a * cos[i] + -b * sin[i], bf16);
        v[i + half] = rnd(b * cos[i + half] + a * sin[i + half], bf16);
      }
    }
  }
}

/* o[b, H, D] = softmax(q k^T * scale) v for each of H query heads of each of B rows (q's rows ldq
 * apart, o's ldo) over `slots` cached keys/values of its group (G groups of H/G heads; row b's
 * group g keys at kc + (b * G + g) * stride * D, one row of D a slot), slot j attended where
 * valid[b * ldvalid + j] (valid NULL: every slot; ldvalid 0: one mask for every row) and slot
 * `always` whatever valid says (-1: none); sc: B * H * slots floats of scratch. In bfloat16 the
 * scores, the weights and o are rounded where the torch path rounds them. */
static void attend(const float *q, int64_t ldq, const void *kc, const void *vc, int64_t B, int64_t H, int64_t G,
                   int64_t D, int64_t stride, int64_t slots, const uint8_t *valid, int64_t ldvalid, int64_t always,
                   float scale, float *sc, float *o, int64_t ldo, int bf, int threads) {
  const int64_t per_group = H / G;
  const int big = 2 * B * G * slots * D * (bf ? 2 : 4) >= SMALL_BYTES;
#pragma omp parallel for schedule(static) if (big) num_threads(threads)
  for (int64_t bh = 0; bh < B * H; bh++) {
    const int64_t b = bh / H, hh = bh % H, base = (b * G + hh / per_group) * stride * D;
    const uint8_t *ok = valid == NULL ? NULL : valid + b * ldvalid;
    const float *qh = q + b * ldq + hh * D;
    float *s = sc + bh * slots, top = -INFINITY;
    for (int64_t j = 0; j < slots; j++) {
      if (ok != NULL && !ok[j] && j != always) { s[j] = -INFINITY; continue; }
      float dot = 0.f;
      if (bf) for (int64_t d = 0; d < D; d++) dot += qh[d] * bf16_to_f32(((const uint16_t *)kc)[base + j * D + d]);
      else dot = dot_f32(qh, (const float *)kc + base + j * D, D);
      s[j] = rnd(rnd(dot, bf) * scale, bf);
      if (s[j] > top) top = s[j];
    }
    float sum = 0.f;
    for (int64_t j = 0; j < slots; j++) sum += (s[j] = expf(s[j] - top));
    for (int64_t j = 0; j < slots; j++) s[j] = rnd(s[j] / sum, bf);
    float *oh = o + b * ldo + hh * D;
    for (int64_t d = 0; d < D; d++) oh[d] = 0.f;
    for (int64_t j = 0; j < slots; j++) {
      const float p = s[j];
      if (p == 0.f) continue;
      if (bf) {
        const uint16_t *vr = (const uint16_t *)vc + base + j * D;
        for (int64_t d = 0; d < D; d++) oh[d] += p * bf16_to_f32(vr[d]);
      } else {
        const float *vr = (const float *)vc + base + j * D;
        for (int64_t d = 0; d < D; d++) oh[d] += p * vr[d];
      }
    }
    for (int64_t d = 0; d < D; d++) oh[d] = rnd(oh[d], bf);
  }
}

/* x_out = layer(x_in) for one token of each of B rows (x [B, dim]) at cache slot `pos`; the
 * layer's keys/values are written to slot pos of kc/vc ([B, kv_heads, max_len, head_dim]; S =
 * max_len) and the first R channels of each head's query and key are rotated by cos/sin in either
 * layout (R 0: no rotary, cos/sin unread; row b's angles at cos + b * ldcos, ldcos 0: the same for
 * every row) (the step's facts are arguments: the layer struct is shared by every thread), and
 * row b's query attends slots 0..pos where valid[b * ldvalid + s] (NULL: all; slot pos always). A
 * cross-attention layer attends the S_cross keys/values ck/cv ([B, heads, S_cross, head_dim]) of
 * its source. x_out may be x_in. Returns 0, or -1 (nothing written) when the scratch memory cannot
 * be allocated. */
int tatlas_decode_layer(const tatlas_layer *L, int64_t B, const void *x_in, void *x_out, void *kc, void *vc,
                        int64_t S, int64_t pos, const float *cos, const float *sin, int64_t ldcos, int64_t R,
                        int interleaved, const uint8_t *valid, int64_t ldvalid, const void *ck, const void *cv,
                        int64_t S_cross, int threads) {
  const int bf = L->bf16, classic = L->classic, layer_norm = L->layer_norm;
  const int64_t C = L->dim, H = L->heads, G = L->kv_heads, D = L->head_dim, F = L->hidden, QKV = (H + 2 * G) * D;
  const int64_t widest = (F > C ? F : C) > H * D ? (F > C ? F : C) : H * D;
  const int64_t slots = pos + 1, scores = L->cross && S_cross > slots ? S_cross : slots;
  const int64_t n = B * (2 * C + QKV + H * D + H * scores + 2 * F) + widest; /* floats */
  float *buf = malloc((size_t)n * sizeof(float) + (size_t)(B * widest) * sizeof(uint16_t));
  if (buf == NULL) return -1;
  /* per row: x, h [C]; qkv [QKV] (q, k, v one after the other); o [H * D]; gu [2F] (gate, up) */
  float *x = buf, *h = x + B * C, *qkv = h + B * C, *o = qkv + B * QKV, *sc = o + B * H * D;
  float *gu = sc + B * H * scores, *xs = gu + B * 2 * F;
  uint16_t *x16 = (uint16_t *)(xs + widest);
  for (int64_t i = 0; i < B * C; i++) x[i] = ld(x_in, i, bf);
#define PROJECT(which, W, b, X, ldx, Y, ldy, N, K) \
  project(L, which, W, b, X, ldx, Y, ldy, B, N, K, x16, xs, threads)
#define NORM(w, bias, offset, eps) \
  for (int64_t r = 0; r < B; r++) norm(x + r * C, w, bias, offset, eps, layer_norm, h + r * C, C, bf)
#define RESIDUAL \
  for (int64_t i = 0; i < B * C; i++) x[i] = rnd(x[i] + h[i], bf)

  /* attention: norm, q/k/v, rotary, the cache write, softmax(q k^T * scale) v, output projection */
  NORM(L->attn_norm, L->attn_norm_b, L->attn_offset, L->attn_eps);
  if (L->qkv_joined) { /* one product over all three */
    PROJECT(P_Q, L->wq, L->bq, h, C, qkv, QKV, QKV, C);
  } else {
    PROJECT(P_Q, L->wq, L->bq, h, C, qkv, QKV, H * D, C);
    PROJECT(P_K, L->wk, L->bk, h, C, qkv + H * D, QKV, G * D, C);
    PROJECT(P_V, L->wv, L->bv, h, C, qkv + (H + G) * D, QKV, G * D, C);
  }
  for (int64_t r = 0; r < B; r++) {
    float *q = qkv + r * QKV, *k = q + H * D, *v = k + G * D;
    if (R > 0) {
      rotary(q, H, D, R, cos + r * ldcos, sin + r * ldcos, interleaved, bf);
      rotary(k, G, D, R, cos + r * ldcos, sin + r * ldcos, interleaved, bf);
    }
    for (int64_t j = 0; j < G * D; j++) {
      int64_t at = ((r * G + j / D) * S + pos) * D + j % D;
      if (bf) ((uint16_t *)kc)[at] = f32_to_bf16(k[j]), ((uint16_t *)vc)[at] = f32_to_bf16(v[j]);
      else ((float *)kc)[at] = k[j], ((float *)vc)[at] = v[j];
    }
  }
  attend(qkv, QKV, kc, vc, B, H, G, D, S, slots, valid, ldvalid, pos, L->scale, sc, o, H * D, bf, threads);
  PROJECT(P_O, L->wo, L->bo, o, H * D, h, C, C, H * D);
  RESIDUAL;

  if (L->cross) { /* norm, query, attention over the source's cached keys/values, output projection
                  * (classic layers' products are all in the model's dtype: q's and o's format holds for these) */
    NORM(L->cross_norm, L->cross_norm_b, L->cross_offset, L->cross_eps);
    PROJECT(P_Q, L->wcq, L->bcq, h, C, qkv, QKV, H * D, C);
    attend(qkv, QKV, ck, cv, B, H, H, D, S_cross, S_cross, NULL, 0, -1, L->cross_scale, sc, o, H * D, bf, threads);
    PROJECT(P_O, L->wco, L->bco, o, H * D, h, C, C, H * D);
    RESIDUAL;
  }

  NORM(L->mlp_norm, L->mlp_norm_b, L->mlp_offset, L->mlp_eps);
  if (classic) { /* MLP: down(act(up(h) + bu)) + bd */
    PROJECT(P_UP, L->wu, L->bu, h, C, gu, 2 * F, F, C);
    for (int64_t r = 0; r < B; r++) activate(gu + r * 2 * F, F, L->act, bf);
    PROJECT(P_DOWN, L->wd, L->bd, gu, 2 * F, h, C, C, F);
  } else { /* MLP: down(silu(gate(h)) * up(h)) */
    if (L->gate_up_joined) {
      PROJECT(P_GATE, L->wg, NULL, h, C, gu, 2 * F, 2 * F, C);
    } else {
      PROJECT(P_GATE, L->wg, NULL, h, C, gu, 2 * F, F, C);
      PROJECT(P_UP, L->wu, NULL, h, C, gu + F, 2 * F, F, C);
    }
    for (int64_t r = 0; r < B; r++) {
      float *g = gu + r * 2 * F, *u = g + F;
      for (int64_t i = 0; i < F; i++) g[i] = rnd(rnd(g[i] / (1.f + expf(-g[i])), bf) * u[i], bf);
    }
    PROJECT(P_DOWN, L->wd, NULL, gu, 2 * F, h, C, C, F);
  }
#undef PROJECT
#undef NORM
#undef RESIDUAL
  for (int64_t i = 0; i < B * C; i++) {
    float y = rnd(x[i] + h[i], bf);
    if (bf) ((uint16_t *)x_out)[i] = f32_to_bf16(y);
    else ((float *)x_out)[i] = y;
  }
  free(buf);
  return 0;
}

/* n layers one after the other (a whole decoder's step in one call): layer i reads x from the
 * previous one, with its own cache kc[i]/vc[i], rotary cos[i]/sin[i], mask valid[i] and (ck NULL:
 * no layer has any) cross-attention keys/values ck[i]/cv[i]. */
int tatlas_decode_layers(const tatlas_layer *const *L, int64_t n, int64_t B, const void *x_in, void *x_out,
                         void *const *kc, void *const *vc, int64_t S, int64_t pos, const float *const *cos,
                         const float *const *sin, int64_t ldcos, int64_t R, int interleaved,
                         const uint8_t *const *valid, int64_t ldvalid, const void *const *ck, const void *const *cv,
                         int64_t S_cross, int threads) {
  for (int64_t i = 0; i < n; i++)
    if (tatlas_decode_layer(L[i], B, i == 0 ? x_in : x_out, x_out, kc[i], vc[i], S, pos, cos[i], sin[i], ldcos, R,
                            interleaved, valid[i], ldvalid, ck ? ck[i] : NULL, cv ? cv[i] : NULL, S_cross, threads))
      return -1;
  return 0;
}
#endif
