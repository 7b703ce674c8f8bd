/* LSA's greedy removal over one group of input columns, every row (dlp_lib/lsa.py, _greedy_error).

   For each row: `steps` times, take the column of least cost (the first of equal ones; a NaN counts as
   least, as torch.argmin), write that cost to chosen[step * rows + row] and the weight to the row of
   `removed`, add ((2 w_j) w_pick) H[pick, j] to every column's cost, and mark the column taken (+inf).
   The same float operations in the same order as the PyTorch loop: built without fused multiply-add
   (dlp_lib/ckernel.py), it gives the same bits. */
#include <math.h>

#define LANES 16

void lsa_group(float *cost, long cost_stride, const float *w, long w_stride, const float *h, long h_stride,
               long rows, long width, long steps, float *chosen, float *removed)
{
    for (long r = 0; r < rows; r++) {
        float *c = cost + r * cost_stride;
        const float *wr = w + r * w_stride;
        float *gone = removed + r * width;
        for (long s = 0; s < steps; s++) {
            /* the least cost, in LANES independent minima the compiler vectorises (x < m ? x : m is
               exactly a vector min); a NaN never wins there, so it is looked for alongside */
            float lane[LANES];
            int nan[LANES];
            for (long k = 0; k < LANES; k++) {
                lane[k] = INFINITY;
                nan[k] = 0;
            }
            long j = 0;
            for (; j + LANES <= width; j += LANES) {
                for (long k = 0; k < LANES; k++) {
                    const float x = c[j + k];
                    lane[k] = x < lane[k] ? x : lane[k];
                    nan[k] |= x != x;
                }
            }
            float best = INFINITY;
            int any_nan = 0;
            for (long k = 0; k < LANES; k++) {
                best = lane[k] < best ? lane[k] : best;
                any_nan |= nan[k];
            }
            for (; j < width; j++) {
                best = c[j] < best ? c[j] : best;
                any_nan |= c[j] != c[j];
            }
            long pick = 0;
            if (any_nan) {
                while (c[pick] == c[pick]) pick++;
                best = c[pick];
            } else {
                while (c[pick] != best) pick++;
            }
            chosen[s * rows + r] = best;
            const float picked = wr[pick];
            const float *hp = h + pick * h_stride;
            for (long j = 0; j < width; j++) {
                c[j] += ((2.0f * wr[j]) * picked) * hp[j];
            }
            c[pick] = INFINITY;
            gone[pick] = picked;
        }
    }
}
