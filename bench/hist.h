/*
 * bench_hist: a log-linear latency histogram (HDR-style) with bounded relative error.
 *
 * Values (nanoseconds, or any non-negative integer unit) below 2^SUB_BITS are counted exactly;
 * above that every power-of-two range is split into 2^SUB_BITS equal buckets, so a bucket is at
 * most 1/32 (~3%) wide relative to its values. Fixed size (no allocation), mergeable, and
 * recording is one count-leading-zeros and an increment. Percentiles report the bucket's upper
 * edge (never an optimistic figure); min and max are exact.
 *
 * Owning thread: whoever records; not thread-safe.
 */
#ifndef MDM_BENCH_HIST_H
#define MDM_BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 5
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
/* Highest shift is 63 - SUB_BITS; one extra range for the exact small values. */
#define BENCH_HIST_BUCKETS ((64 - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

typedef struct bench_hist {
    uint64_t count;
    uint64_t sum; /* saturates; only used for the mean */
    uint64_t min, max;
    uint64_t buckets[BENCH_HIST_BUCKETS];
} bench_hist_t;

/** Empties h. */
void bench_hist_init(bench_hist_t *h);

/** Counts one value. */
void bench_hist_record(bench_hist_t *h, uint64_t v);

/** Adds every count of src to dst. */
void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src);

/**
 * The value at quantile q (0 < q <= 1): the upper edge of the bucket holding the
 * ceil(q*count)-th smallest value, capped at max. 0 when empty.
 */
uint64_t bench_hist_quantile(const bench_hist_t *h, double q);

/** Mean value, 0 when empty. */
double bench_hist_mean(const bench_hist_t *h);

/** Bucket index of v and the largest value that bucket holds (exposed for tests). */
unsigned bench_hist_index(uint64_t v);
uint64_t bench_hist_upper(unsigned index);

#endif
