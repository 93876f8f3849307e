/* Unit test of bench/hist: index layout, relative error bound, quantiles. Exit 0 pass, 1 fail. */
#include <stdio.h>
#include <stdlib.h>

#include "bench/hist.h"

static int failures;

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);            \
            failures++;                                                                         \
        }                                                                                       \
    } while (0)

static void test_layout(void)
{
    unsigned prev = 0;
    /* Dense and monotonic; every value lies in its bucket; width bounded by 1/SUB. */
    for (uint64_t v = 0; v < (1u << 20); v += 1 + v / 97) {
        unsigned i = bench_hist_index(v);
        CHECK(i >= prev && i <= prev + 1 + (unsigned)(v / 97));
        CHECK(v <= bench_hist_upper(i));
        CHECK(i == 0 || bench_hist_upper(i - 1) < v);
        CHECK(bench_hist_upper(i) - v <= v / BENCH_HIST_SUB);
        prev = i;
    }
    CHECK(bench_hist_index(UINT64_MAX) == BENCH_HIST_BUCKETS - 1);
    CHECK(bench_hist_upper(BENCH_HIST_BUCKETS - 1) == UINT64_MAX);
    for (unsigned i = 1; i < BENCH_HIST_BUCKETS; i++)
        CHECK(bench_hist_index(bench_hist_upper(i - 1) + 1) == i);
}

static void test_quantiles(void)
{
    bench_hist_t *h = malloc(sizeof(*h));
    bench_hist_init(h);
    CHECK(bench_hist_quantile(h, 0.5) == 0);
    for (uint64_t v = 1; v <= 100000; v++)
        bench_hist_record(h, v * 1000); /* 1 us .. 100 ms in ns */
    CHECK(h->count == 100000 && h->min == 1000 && h->max == 100000000);
    uint64_t p50 = bench_hist_quantile(h, 0.5), p99 = bench_hist_quantile(h, 0.99);
    CHECK(p50 >= 50000000 && p50 <= 50000000 + 50000000 / BENCH_HIST_SUB);
    CHECK(p99 >= 99000000 && p99 <= 100000000);
    CHECK(bench_hist_quantile(h, 1.0) == h->max);
    double mean = bench_hist_mean(h);
    CHECK(mean > 50000000 && mean < 50001000);

    bench_hist_t *g = malloc(sizeof(*g));
    bench_hist_init(g);
    bench_hist_record(g, 7);
    bench_hist_merge(g, h);
    CHECK(g->count == 100001 && g->min == 7 && g->max == h->max);
    CHECK(bench_hist_quantile(g, 0.000001) == 7);
    free(g);
    free(h);
}

int main(void)
{
    test_layout();
    test_quantiles();
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
