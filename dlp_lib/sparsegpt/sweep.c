/* SparseGPT's column sweep on a CPU: the PyTorch loop of dlp_lib/sparsegpt.py, compiled.
 *
 * Compiled by dlp_lib/sparsegpt_c.py with -ffp-contract=off (no fused multiply-add) and without
 * -ffast-math, so every element sees the PyTorch loop's float32 operations in the same order, each
 * rounded the same way: the results are bit-identical to it at any vector width.
 *
 * The rows of a block are independent, so the sweep runs on CHUNK rows at a time, copied into a
 * column-major scratch buffer (width x CHUNK floats) that stays in the L1/L2 cache for the whole
 * column loop; the copy back zeroes the pruned entries of the swept columns.
 */
#include <string.h>

#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
#if __has_attribute(target_clones)
/* one build for every x86-64 CPU: the loader picks the widest vectors the CPU has (an ELF ifunc) */
#define VECTOR_VARIANTS __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef VECTOR_VARIANTS
#define VECTOR_VARIANTS
#endif

#define CHUNK 32 /* rows per pass: 32 floats are two AVX-512 vectors */

/* Sweep columns [first, last) of a block of `width` columns, for rows [row_start, row_stop).
 *
 *   W      the block, row r at W + r * ldw (a view into the full weight), updated in place
 *   err    rows x width errors, row r at err + r * lde: (w / d) where pruned, 0 elsewhere
 *   mask   rows x width bytes, 1 where pruned, row r at mask + r * ldm
 *   U      the block's upper Cholesky factor, row i at U + i * ldu; d its diagonal
 *   scratch width * CHUNK floats
 *
 * For column i and each row: e = (w_i * m_i) / d_i, then every later column j: w_j = w_j - U_ij * e.
 */
VECTOR_VARIANTS
void sweep_columns(float *restrict W, long ldw, float *restrict err, long lde, const unsigned char *restrict mask,
                   long ldm, const float *restrict U, long ldu, const float *restrict d, long width, long first,
                   long last, long row_start, long row_stop, float *restrict scratch)
{
    float e[CHUNK];
    for (long r0 = row_start; r0 < row_stop; r0 += CHUNK) {
        const long n = row_stop - r0 < CHUNK ? row_stop - r0 : CHUNK;
        float *w = scratch; /* w[j * CHUNK + r]: column j of row r0 + r */
        if (n < CHUNK)
            memset(w, 0, sizeof(float) * CHUNK * width); /* padding rows: w = 0, never written back */
        for (long r = 0; r < n; r++)
            for (long j = first; j < width; j++)
                w[j * CHUNK + r] = W[(r0 + r) * ldw + j];
        for (long i = first; i < last; i++) {
            const float di = d[i];
            for (long r = 0; r < CHUNK; r++) {
                const float m = r < n ? (float)mask[(r0 + r) * ldm + i] : 0.0f;
                e[r] = (w[i * CHUNK + r] * m) / di;
            }
            for (long r = 0; r < n; r++)
                err[(r0 + r) * lde + i] = e[r];
            for (long j = i + 1; j < width; j++) {
                const float u = U[i * ldu + j];
                float *wj = w + j * CHUNK;
                for (long r = 0; r < CHUNK; r++)
                    wj[r] = wj[r] - u * e[r];
            }
        }
        for (long r = 0; r < n; r++) {
            for (long j = first; j < last; j++)
                W[(r0 + r) * ldw + j] = mask[(r0 + r) * ldm + j] ? 0.0f : w[j * CHUNK + r];
            for (long j = last; j < width; j++)
                W[(r0 + r) * ldw + j] = w[j * CHUNK + r];
        }
    }
}
