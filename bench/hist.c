/*
 * bench_hist: log-linear histogram. See hist.h.
 *
 * Index layout: for v < SUB the index is v. Otherwise let shift = msb(v) - SUB_BITS; the top
 * SUB_BITS+1 bits of v, top = v >> shift, lie in [SUB, 2*SUB), and the index is
 * (shift + 1) * SUB + (top - SUB). Indexes are dense and increase with v.
 */
#include "bench/hist.h"

#include <assert.h>
#include <string.h>

void bench_hist_init(bench_hist_t *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned bench_hist_index(uint64_t v)
{
    if (v < BENCH_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - BENCH_HIST_SUB_BITS;
    unsigned top = (unsigned)(v >> shift);
    assert(top >= BENCH_HIST_SUB && top < 2 * BENCH_HIST_SUB);
    return (shift + 1) * BENCH_HIST_SUB + (top - BENCH_HIST_SUB);
}

uint64_t bench_hist_upper(unsigned index)
{
    assert(index < BENCH_HIST_BUCKETS);
    if (index < BENCH_HIST_SUB)
        return index;
    unsigned shift = index / BENCH_HIST_SUB - 1;
    uint64_t top = BENCH_HIST_SUB + index % BENCH_HIST_SUB;
    uint64_t next = (top + 1) << shift; /* first value of the next bucket; wraps only at 2^64 */
    return next == 0 ? UINT64_MAX : next - 1;
}

void bench_hist_record(bench_hist_t *h, uint64_t v)
{
    h->buckets[bench_hist_index(v)]++;
    h->count++;
    h->sum = h->sum + v < h->sum ? UINT64_MAX : h->sum + v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src)
{
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t bench_hist_quantile(const bench_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    double want = q * (double)h->count;
    uint64_t rank = want >= (double)h->count ? h->count : (uint64_t)want;
    if ((double)rank < want)
        rank++; /* ceil without libm */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t up = bench_hist_upper(i);
            return up > h->max ? h->max : up < h->min ? h->min : up;
        }
    }
    return h->max;
}

double bench_hist_mean(const bench_hist_t *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0;
}
