/*
 * storage/store tests on temporary RocksDB directories: CRUD per column family, prefix
 * iteration bounds, async commits and gets, commit order, group commit from several threads,
 * schema versions and migrations, persistence, durability modes, and crash safety (a child
 * process committing with FSYNC is SIGKILLed; every acknowledged commit must survive).
 *
 * The crash child is this same program re-executed ("crash-child <dir> <fd>"), so it starts
 * with a clean RocksDB environment instead of a fork of a process with RocksDB threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/log.h"
#include "storage/store.h"

static char *tmpdir(const char *tag)
{
    return strdup(check_tmpdir(tag));
}

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static mdm_store_t *open_store(const char *path, enum mdm_durability d, unsigned threads)
{
    struct mdm_store_options opt = {.path = path, .durability = d, .threads = threads};
    mdm_store_t *s = NULL;
    int ret = mdm_store_open(&s, &opt);
    if (ret != 0)
        fprintf(stderr, "mdm_store_open(%s): %s\n", path, mdm_strerror(ret));
    return s;
}

/* Returns the get status; on 0 compares the value with want (-9999 when different). */
static int get_is(mdm_store_t *s, enum mdm_store_cf cf, const char *key, const char *want)
{
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    int ret = mdm_store_get(s, cf, key, strlen(key), &v);
    if (ret == 0 && (!want || v.len != strlen(want) ||
                     (v.len && memcmp(mdm_buf_head(&v), want, v.len))))
        ret = -9999;
    mdm_buf_dispose(&v);
    return ret;
}

/* get_is for binary values. */
static void be32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

static int get_bin(mdm_store_t *s, enum mdm_store_cf cf, const char *key, const void *want,
                   size_t want_len)
{
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    int ret = mdm_store_get(s, cf, key, strlen(key), &v);
    if (ret == 0 && (v.len != want_len || (v.len && memcmp(mdm_buf_head(&v), want, v.len) != 0)))
        ret = -9999;
    mdm_buf_dispose(&v);
    return ret;
}

static void put_str(mdm_batch_t *b, enum mdm_store_cf cf, const char *k, const char *v)
{
    mdm_batch_put(b, cf, k, strlen(k), v, strlen(v));
}

/* ---- basic CRUD ---------------------------------------------------------------------------- */

static void test_crud(void)
{
    char *dir = tmpdir("store-crud");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    CHECK(b != NULL);
    CHECK_EQ_INT(mdm_batch_count(b), 0);
    char val[32];
    size_t val_bytes = 0; /* "value-<cf>": 7 bytes, 8 from cf 10 on */
    for (int cf = 0; cf < MDM_CF_COUNT; cf++) {
        if (cf == MDM_CF_META)
            continue; /* holds schema_version; the same key would be fine but keep it clean */
        snprintf(val, sizeof(val), "value-%d", cf);
        val_bytes += strlen(val);
        put_str(b, (enum mdm_store_cf)cf, "k", val);
        put_str(b, (enum mdm_store_cf)cf, "gone", "x");
    }
    put_str(b, MDM_CF_META, "k", "value-0");
    val_bytes += 7;
    CHECK_EQ_INT(mdm_batch_count(b), 2 * (MDM_CF_COUNT - 1) + 1);
    CHECK_EQ_INT(mdm_batch_bytes(b), 1 * MDM_CF_COUNT + val_bytes + (4 + 1) * (MDM_CF_COUNT - 1));
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_batch_count(b), 0);
    CHECK_EQ_INT(mdm_batch_bytes(b), 0);

    /* Each column family holds its own value under the same key. */
    int wrong = 0;
    for (int cf = 0; cf < MDM_CF_COUNT; cf++) {
        snprintf(val, sizeof(val), "value-%d", cf);
        if (get_is(s, (enum mdm_store_cf)cf, "k", val) != 0)
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "missing", NULL), MDM_ENOTFOUND);
    CHECK_EQ_INT(get_is(s, MDM_CF_META, "gone", NULL), MDM_ENOTFOUND);

    /* Delete in one CF leaves the others alone; overwrite; empty value; binary key. */
    mdm_batch_delete(b, MDM_CF_DEVICES, "gone", 4);
    mdm_batch_delete(b, MDM_CF_QUEUE, "never-existed", 13);
    put_str(b, MDM_CF_COMMANDS, "k", "overwritten");
    mdm_batch_put(b, MDM_CF_SECRETS, "empty", 5, NULL, 0);
    static const uint8_t bin_key[] = {0, 1, 0xff, 0, 2};
    mdm_batch_put(b, MDM_CF_AUDIT, bin_key, sizeof(bin_key), "\0\1", 2);
    CHECK_EQ_INT(mdm_batch_count(b), 5);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "gone", NULL), MDM_ENOTFOUND);
    CHECK_EQ_INT(get_is(s, MDM_CF_HISTORY, "gone", "x"), 0);
    CHECK_EQ_INT(get_is(s, MDM_CF_COMMANDS, "k", "overwritten"), 0);
    CHECK_EQ_INT(get_is(s, MDM_CF_SECRETS, "empty", ""), 0);
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_AUDIT, bin_key, sizeof(bin_key), &v), 0);
    CHECK(v.len == 2 && memcmp(mdm_buf_head(&v), "\0\1", 2) == 0);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_AUDIT, bin_key, 4, &v), MDM_ENOTFOUND);
    mdm_buf_dispose(&v);

    /* Put then delete of one key in the same batch: the later op wins. */
    mdm_batch_clear(b);
    put_str(b, MDM_CF_PROBE, "pd", "1");
    mdm_batch_delete(b, MDM_CF_PROBE, "pd", 2);
    put_str(b, MDM_CF_PROBE, "dp", "1");
    mdm_batch_delete(b, MDM_CF_PROBE, "dp", 2);
    put_str(b, MDM_CF_PROBE, "dp", "2");
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    CHECK_EQ_INT(get_is(s, MDM_CF_PROBE, "pd", NULL), MDM_ENOTFOUND);
    CHECK_EQ_INT(get_is(s, MDM_CF_PROBE, "dp", "2"), 0);

    /* An empty batch commits fine. */
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    /* A bounded output buffer reports MDM_ETOOBIG. */
    mdm_buf_init(&v, 3);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_COMMANDS, "k", 1, &v), MDM_ETOOBIG);
    mdm_buf_dispose(&v);

    /* A large value goes through unchanged. */
    size_t big_len = 1 << 20;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)(i * 31 + 7);
    mdm_batch_clear(b);
    mdm_batch_put(b, MDM_CF_HISTORY, "big", 3, big, big_len);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_HISTORY, "big", 3, &v), 0);
    CHECK(v.len == big_len && memcmp(mdm_buf_head(&v), big, big_len) == 0);
    mdm_buf_dispose(&v);
    free(big);

    struct mdm_store_stats st;
    mdm_store_get_stats(s, &st);
    CHECK(st.commits >= 6);
    CHECK(st.records >= 2 * (MDM_CF_COUNT - 1) + 1 + 5 + 5 + 1);
    CHECK(st.fsyncs >= 5 && st.fsyncs <= st.commits);
    CHECK(st.gets > 10);
    CHECK_EQ_INT(st.failures, 0);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- prefix iteration ---------------------------------------------------------------------- */

struct collect {
    char keys[32][16];
    size_t klens[32];
    int n;
    int stop_after; /* 0: never */
};

static int on_collect(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct collect *c = arg;
    if (c->n < 32 && klen <= 16) {
        memcpy(c->keys[c->n], key, klen);
        c->klens[c->n] = klen;
        /* each value is its key reversed: checks val belongs to key */
        bool ok = vlen == klen;
        for (size_t i = 0; ok && i < klen; i++)
            ok = ((const char *)val)[i] == ((const char *)key)[klen - 1 - i];
        if (!ok)
            c->klens[c->n] = 999;
    }
    c->n++;
    return c->stop_after && c->n >= c->stop_after ? 42 : 0;
}

static bool collected(const struct collect *c, int i, const char *key, size_t klen)
{
    return i < c->n && c->klens[i] == klen && memcmp(c->keys[i], key, klen) == 0;
}

static void test_iteration(void)
{
    char *dir = tmpdir("store-iter");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 1);
    CHECK(s != NULL);
    if (!s)
        goto out;
    /* key, length (binary keys) */
    static const struct {
        const char *k;
        size_t len;
    } keys[] = {
        {"a", 1},       {"ab", 2},         {"ab\0", 3},     {"ab\1", 3},
        {"abc", 3},     {"ab\xff", 3},     {"ab\xff\xff", 4}, {"ac", 2}, /* successor of ab */
        {"b", 1},       {"\xff", 1},       {"\xff\xff", 2}, {"aa\xff", 3},
    };
    mdm_batch_t *b = mdm_batch_new();
    for (size_t i = 0; i < MDM_ARRAY_LEN(keys); i++) {
        char rev[8];
        for (size_t j = 0; j < keys[i].len; j++)
            rev[j] = keys[i].k[keys[i].len - 1 - j];
        mdm_batch_put(b, MDM_CF_DEVICES, keys[i].k, keys[i].len, rev, keys[i].len);
    }
    /* The same keys in another column family must never show up. */
    mdm_batch_put(b, MDM_CF_COMMANDS, "ab", 2, "ba", 2);
    mdm_batch_put(b, MDM_CF_COMMANDS, "abz", 3, "zba", 3);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    struct collect c = {0};
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "ab", 2, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 6);
    CHECK(collected(&c, 0, "ab", 2));
    CHECK(collected(&c, 1, "ab\0", 3));
    CHECK(collected(&c, 2, "ab\1", 3));
    CHECK(collected(&c, 3, "abc", 3));
    CHECK(collected(&c, 4, "ab\xff", 3));
    CHECK(collected(&c, 5, "ab\xff\xff", 4));

    /* A prefix ending in 0xff: its successor is "ac", which must stay out. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "ab\xff", 3, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 2);
    CHECK(collected(&c, 0, "ab\xff", 3));
    CHECK(collected(&c, 1, "ab\xff\xff", 4));

    /* A prefix of only 0xff bytes has no successor. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "\xff", 1, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 2);
    CHECK(collected(&c, 0, "\xff", 1));
    CHECK(collected(&c, 1, "\xff\xff", 2));

    /* "a": everything from "a" up to but excluding "b". */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "a", 1, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 9);
    CHECK(collected(&c, 0, "a", 1));
    CHECK(collected(&c, 1, "aa\xff", 3));
    CHECK(collected(&c, 8, "ac", 2));

    /* No match, an empty prefix (all keys, ordered), early stop. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "abd", 3, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, NULL, 0, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, (int)MDM_ARRAY_LEN(keys));
    bool ordered = true, values_ok = true;
    for (int i = 0; i < c.n && i < 32; i++) {
        if (c.klens[i] == 999)
            values_ok = false;
        if (i > 0) {
            size_t m = c.klens[i - 1] < c.klens[i] ? c.klens[i - 1] : c.klens[i];
            int cmp = memcmp(c.keys[i - 1], c.keys[i], m);
            if (cmp > 0 || (cmp == 0 && c.klens[i - 1] >= c.klens[i]))
                ordered = false;
        }
    }
    CHECK(ordered);
    CHECK(values_ok);
    memset(&c, 0, sizeof(c));
    c.stop_after = 3;
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "a", 1, on_collect, &c), 42);
    CHECK_EQ_INT(c.n, 3);

    /* A long prefix (past the on-stack bound buffer). */
    char longkey[300];
    memset(longkey, 'L', sizeof(longkey));
    mdm_batch_clear(b);
    mdm_batch_put(b, MDM_CF_PROBE, longkey, sizeof(longkey), "", 0);
    mdm_batch_put(b, MDM_CF_PROBE, longkey, 200, "", 0);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_PROBE, longkey, 250, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 1);

    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_COMMANDS, "ab", 2, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 2);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- asynchronous commits and gets --------------------------------------------------------- */

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;   /* callbacks still expected */
    int failures;  /* callbacks with an unexpected status */
    int last_status;
    bool off_thread; /* every callback ran on another thread than the test */
    pthread_t caller;
    char value[64];
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->off_thread = true;
    w->caller = pthread_self();
}

static void waiter_dispose(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static void waiter_signal(struct waiter *w, int status, bool ok)
{
    pthread_mutex_lock(&w->lock);
    if (pthread_equal(pthread_self(), w->caller))
        w->off_thread = false;
    w->last_status = status;
    if (!ok)
        w->failures++;
    w->pending--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Waits until no callbacks are pending, at most timeout_ms. Returns true when all came. */
static bool waiter_wait(struct waiter *w, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->lock);
    int rc = 0;
    while (w->pending > 0 && rc == 0)
        rc = pthread_cond_timedwait(&w->cond, &w->lock, &deadline);
    bool all = w->pending == 0;
    pthread_mutex_unlock(&w->lock);
    return all;
}

static void on_commit_ok(void *arg, int status)
{
    waiter_signal(arg, status, status == 0);
}

static void on_get_value(void *arg, int status, const void *val, size_t vlen)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    if (status == 0 && vlen < sizeof(w->value)) {
        memcpy(w->value, val, vlen);
        w->value[vlen] = 0;
    }
    pthread_mutex_unlock(&w->lock);
    waiter_signal(w, status, status == 0 || status == MDM_ENOTFOUND);
}

/* Frees its batch inside done: the store must not touch it afterwards. */
static void on_commit_free(void *arg, int status)
{
    void **pair = arg;
    mdm_batch_free(pair[0]);
    waiter_signal(pair[1], status, status == 0);
}

static void test_async(void)
{
    char *dir = tmpdir("store-async");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 2);
    CHECK(s != NULL);
    if (!s)
        goto out;
    struct waiter w;
    waiter_init(&w);

    mdm_batch_t *b = mdm_batch_new();
    put_str(b, MDM_CF_DEVICES, "udid-1", "mac one");
    w.pending = 1;
    CHECK_EQ_INT(mdm_store_commit_async(s, b, on_commit_ok, &w), 0);
    CHECK(waiter_wait(&w, 10000));
    CHECK_EQ_INT(w.last_status, 0);

    w.pending = 1;
    CHECK_EQ_INT(mdm_store_get_async(s, MDM_CF_DEVICES, "udid-1", 6, on_get_value, &w), 0);
    CHECK(waiter_wait(&w, 10000));
    CHECK_EQ_INT(w.last_status, 0);
    CHECK_STR(w.value, "mac one");

    w.pending = 1;
    CHECK_EQ_INT(mdm_store_get_async(s, MDM_CF_DEVICES, "udid-2", 6, on_get_value, &w), 0);
    CHECK(waiter_wait(&w, 10000));
    CHECK_EQ_INT(w.last_status, MDM_ENOTFOUND);

    /* Batches are applied in acceptance order: the last write to a key wins. */
    enum { ORDER_N = 200 };
    mdm_batch_t *bs[ORDER_N];
    w.pending = ORDER_N;
    for (int i = 0; i < ORDER_N; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%03d", i);
        bs[i] = mdm_batch_new();
        put_str(bs[i], MDM_CF_QUEUE, "same", v);
        if (i % 2) { /* delete + put again inside one batch */
            mdm_batch_delete(bs[i], MDM_CF_QUEUE, "same", 4);
            put_str(bs[i], MDM_CF_QUEUE, "same", v);
        }
        CHECK_EQ_INT(mdm_store_commit_async(s, bs[i], on_commit_ok, &w), 0);
    }
    CHECK(waiter_wait(&w, 20000));
    CHECK_EQ_INT(w.failures, 0);
    char last[16];
    snprintf(last, sizeof(last), "v%03d", ORDER_N - 1);
    CHECK_EQ_INT(get_is(s, MDM_CF_QUEUE, "same", last), 0);
    for (int i = 0; i < ORDER_N; i++)
        mdm_batch_free(bs[i]);

    /* The batch may be freed inside its own done callback. */
    void *pair[2] = {mdm_batch_new(), &w};
    put_str(pair[0], MDM_CF_PROBE, "freed-in-done", "1");
    w.pending = 1;
    CHECK_EQ_INT(mdm_store_commit_async(s, pair[0], on_commit_free, pair), 0);
    CHECK(waiter_wait(&w, 10000));
    CHECK_EQ_INT(get_is(s, MDM_CF_PROBE, "freed-in-done", "1"), 0);

    CHECK(w.off_thread); /* no callback ran on the caller's thread */
    CHECK_EQ_INT(w.failures, 0);

    /* Close drains the queue: every queued commit and get completes, and is on disk. */
    enum { DRAIN_N = 100 };
    w.pending = DRAIN_N + 1;
    mdm_batch_t *drain[DRAIN_N];
    for (int i = 0; i < DRAIN_N; i++) {
        char k[16];
        snprintf(k, sizeof(k), "drain-%03d", i);
        drain[i] = mdm_batch_new();
        put_str(drain[i], MDM_CF_HISTORY, k, "d");
        CHECK_EQ_INT(mdm_store_commit_async(s, drain[i], on_commit_ok, &w), 0);
    }
    CHECK_EQ_INT(mdm_store_get_async(s, MDM_CF_DEVICES, "udid-1", 6, on_get_value, &w), 0);
    mdm_store_close(s);
    CHECK_EQ_INT(w.pending, 0); /* no waiting needed: close returned after all callbacks */
    CHECK_EQ_INT(w.failures, 0);
    for (int i = 0; i < DRAIN_N; i++)
        mdm_batch_free(drain[i]);

    s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    if (s) {
        int missing = 0;
        for (int i = 0; i < DRAIN_N; i++) {
            char k[16];
            snprintf(k, sizeof(k), "drain-%03d", i);
            if (get_is(s, MDM_CF_HISTORY, k, "d") != 0)
                missing++;
        }
        CHECK_EQ_INT(missing, 0);
        CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "udid-1", "mac one"), 0);
        mdm_store_close(s);
    }
    mdm_batch_free(b);
    waiter_dispose(&w);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- several committing threads (shards) --------------------------------------------------- */

enum { SHARDS = 4, SHARD_COMMITS = 300, SHARD_WINDOW = 8 };

struct shard {
    mdm_store_t *s;
    int id;
    struct waiter w;
    int refused;
};

static void *shard_main(void *arg)
{
    struct shard *sh = arg;
    waiter_init(&sh->w);
    mdm_batch_t *batches[SHARD_COMMITS];
    for (int i = 0; i < SHARD_COMMITS; i++) {
        /* keep at most SHARD_WINDOW commits in flight, like a loop waiting on completions */
        pthread_mutex_lock(&sh->w.lock);
        sh->w.pending++;
        while (sh->w.pending > SHARD_WINDOW)
            pthread_cond_wait(&sh->w.cond, &sh->w.lock);
        pthread_mutex_unlock(&sh->w.lock);
        batches[i] = mdm_batch_new();
        for (int r = 0; r < 3; r++) {
            char k[32];
            snprintf(k, sizeof(k), "s%d/%04d/%d", sh->id, i, r);
            put_str(batches[i], MDM_CF_DEVICES, k, k);
        }
        if (mdm_store_commit_async(sh->s, batches[i], on_commit_ok, &sh->w) != 0) {
            sh->refused++;
            waiter_signal(&sh->w, 0, true);
        }
    }
    waiter_wait(&sh->w, 60000);
    for (int i = 0; i < SHARD_COMMITS; i++)
        mdm_batch_free(batches[i]);
    return NULL;
}

struct counter {
    int n;
    int bad;
};

static int on_count(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct counter *c = arg;
    c->n++;
    if (klen != vlen || memcmp(key, val, klen) != 0)
        c->bad++;
    return 0;
}

static void test_concurrent(void)
{
    char *dir = tmpdir("store-conc");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 3);
    CHECK(s != NULL);
    if (!s)
        goto out;
    static struct shard shards[SHARDS];
    pthread_t tids[SHARDS];
    uint64_t t0 = mdm_now_ms();
    for (int i = 0; i < SHARDS; i++) {
        shards[i] = (struct shard){.s = s, .id = i};
        CHECK_EQ_INT(pthread_create(&tids[i], NULL, shard_main, &shards[i]), 0);
    }
    for (int i = 0; i < SHARDS; i++)
        pthread_join(tids[i], NULL);
    uint64_t ms = mdm_now_ms() - t0;
    for (int i = 0; i < SHARDS; i++) {
        CHECK_EQ_INT(shards[i].w.pending, 0);
        CHECK_EQ_INT(shards[i].w.failures, 0);
        CHECK_EQ_INT(shards[i].refused, 0);
        CHECK(shards[i].w.off_thread);
        waiter_dispose(&shards[i].w);
    }
    struct counter c = {0};
    CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "s", 1, on_count, &c), 0);
    CHECK_EQ_INT(c.n, SHARDS * SHARD_COMMITS * 3);
    CHECK_EQ_INT(c.bad, 0);
    struct mdm_store_stats st;
    mdm_store_get_stats(s, &st);
    CHECK(st.commits >= SHARDS * SHARD_COMMITS);
    CHECK(st.fsyncs <= st.commits);
    printf("# %d shards x %d commits (window %d): %llu ms, %llu commits in %llu fsyncs, "
           "mean latency %llu us\n",
           SHARDS, SHARD_COMMITS, SHARD_WINDOW, (unsigned long long)ms,
           (unsigned long long)st.commits, (unsigned long long)st.fsyncs,
           (unsigned long long)(st.commits ? st.commit_us_total / st.commits : 0));
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- schema versions and migrations -------------------------------------------------------- */

static int migration_calls;
static uint32_t migration_from_seen;

static int migrate_to_2(mdm_store_t *s, mdm_batch_t *b, uint32_t from)
{
    migration_calls++;
    migration_from_seen = from;
    /* a real migration reads old records and rewrites them: do the same on one record */
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    int ret = mdm_store_get(s, MDM_CF_DEVICES, "old", 3, &v);
    if (ret == 0) {
        CHECK_EQ_INT(mdm_buf_append(&v, "+v2", 3), 0);
        mdm_batch_put(b, MDM_CF_DEVICES, "old", 3, mdm_buf_head(&v), v.len);
    }
    mdm_buf_dispose(&v);
    return ret;
}

static int migrate_fail(mdm_store_t *s, mdm_batch_t *b, uint32_t from)
{
    (void)s;
    (void)from;
    migration_calls++;
    put_str(b, MDM_CF_DEVICES, "half-done", "x"); /* must not be committed */
    return -EIO;
}

static void test_schema(void)
{
    /* The real schema is V; the test plays code at V+1 (with a migration) and V+2. */
    const uint32_t V = MDM_STORE_SCHEMA_VERSION;
    uint8_t v0[4], v1[4];
    be32(v0, V);
    be32(v1, V + 1);
    char *dir = tmpdir("store-schema");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    if (!s)
        goto out;
    /* schema_version written on creation: 4 bytes, big-endian */
    CHECK_EQ_INT(get_bin(s, MDM_CF_META, "schema_version", v0, 4), 0);
    mdm_batch_t *b = mdm_batch_new();
    put_str(b, MDM_CF_DEVICES, "old", "record");
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_store_close(s);

    /* The code moves to version V+1 with a migration: it runs once, atomically with the bump. */
    mdm_store_testing_schema(V + 1, migrate_to_2);
    migration_calls = 0;
    s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    CHECK_EQ_INT(migration_calls, 1);
    CHECK_EQ_INT(migration_from_seen, V);
    if (s) {
        CHECK_EQ_INT(get_bin(s, MDM_CF_META, "schema_version", v1, 4), 0);
        CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "old", "record+v2"), 0);
        mdm_store_close(s);
    }
    s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    CHECK_EQ_INT(migration_calls, 1); /* not again */
    if (s) {
        CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "old", "record+v2"), 0);
        mdm_store_close(s);
    }

    /* A failing migration aborts open with its code and leaves the database at version V+1. */
    mdm_store_testing_schema(V + 2, migrate_fail);
    migration_calls = 0;
    struct mdm_store_options opt = {.path = dir};
    s = NULL;
    CHECK_EQ_INT(mdm_store_open(&s, &opt), -EIO);
    CHECK(s == NULL);
    CHECK_EQ_INT(migration_calls, 1);

    /* Back to the real code (version V): the version-V+1 database is refused. */
    mdm_store_testing_schema(0, NULL);
    s = (mdm_store_t *)1;
    CHECK_EQ_INT(mdm_store_open(&s, &opt), MDM_ECONFIG);
    CHECK(s == NULL);

    /* Look inside as version-V+1 code: still version V+1, and nothing of the failed step. */
    mdm_store_testing_schema(V + 1, NULL);
    s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ_INT(get_bin(s, MDM_CF_META, "schema_version", v1, 4), 0);
        CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "half-done", NULL), MDM_ENOTFOUND);
        /* an unreadable schema record is refused too */
        mdm_batch_clear(b);
        put_str(b, MDM_CF_META, "schema_version", "\0\2");
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_store_close(s);
    }
    mdm_store_testing_schema(0, NULL);
    CHECK_EQ_INT(mdm_store_open(&s, &opt), MDM_ECONFIG);

    /* A far newer version written by "a future mdmd" is refused as well. */
    char dir2[1024];
    snprintf(dir2, sizeof(dir2), "%s/future", dir);
    s = open_store(dir2, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    if (s) {
        mdm_batch_clear(b);
        mdm_batch_put(b, MDM_CF_META, "schema_version", 14, "\0\0\1\0", 4);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_store_close(s);
    }
    opt.path = dir2;
    CHECK_EQ_INT(mdm_store_open(&s, &opt), MDM_ECONFIG);

    /* Bad options. */
    struct mdm_store_options bad = {.path = NULL};
    CHECK_EQ_INT(mdm_store_open(&s, &bad), -EINVAL);
    bad = (struct mdm_store_options){.path = dir, .threads = 1000};
    CHECK_EQ_INT(mdm_store_open(&s, &bad), -EINVAL);
    bad = (struct mdm_store_options){.path = "/proc/definitely/not/here"};
    CHECK_EQ_INT(mdm_store_open(&s, &bad), MDM_ESTORE);

    mdm_batch_free(b);
out:
    mdm_store_testing_schema(0, NULL);
    rm_rf(dir);
    free(dir);
}

/* ---- persistence and durability modes ------------------------------------------------------ */

static void test_persistence(void)
{
    static const enum mdm_durability modes[] = {MDM_DURABILITY_FSYNC, MDM_DURABILITY_WAL,
                                                MDM_DURABILITY_NONE};
    for (size_t m = 0; m < MDM_ARRAY_LEN(modes); m++) {
        char *dir = tmpdir("store-persist");
        mdm_store_t *s = open_store(dir, modes[m], 0);
        CHECK(s != NULL);
        if (!s) {
            free(dir);
            continue;
        }
        mdm_batch_t *b = mdm_batch_new();
        for (int i = 0; i < 500; i++) {
            char k[16], v[16];
            snprintf(k, sizeof(k), "dev-%04d", i);
            snprintf(v, sizeof(v), "val-%d", i);
            put_str(b, MDM_CF_DEVICES, k, v);
        }
        put_str(b, MDM_CF_SECRETS, "bootstrap:dev-0001", "sealed");
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_batch_clear(b);
        mdm_batch_delete(b, MDM_CF_DEVICES, "dev-0007", 8);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        struct mdm_store_stats st;
        mdm_store_get_stats(s, &st);
        CHECK_EQ_INT(st.fsyncs, modes[m] == MDM_DURABILITY_FSYNC ? st.writes : 0);
        mdm_store_close(s);

        s = open_store(dir, modes[m], 0);
        CHECK(s != NULL);
        if (s) {
            CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "dev-0499", "val-499"), 0);
            CHECK_EQ_INT(get_is(s, MDM_CF_DEVICES, "dev-0007", NULL), MDM_ENOTFOUND);
            CHECK_EQ_INT(get_is(s, MDM_CF_SECRETS, "bootstrap:dev-0001", "sealed"), 0);
            struct counter c = {0};
            CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_DEVICES, "dev-", 4, on_count, &c), 0);
            CHECK_EQ_INT(c.n, 499);
            mdm_store_close(s);
        }
        mdm_batch_free(b);
        rm_rf(dir);
        free(dir);
    }
}

/* ---- crash safety -------------------------------------------------------------------------- */

enum {
    CRASH_MAX = 200000,      /* commits the child attempts at most */
    CRASH_ACKS = 2000,       /* the parent kills the child after this many acks ... */
    CRASH_WAIT_MS = 3000,    /* ... or after this long */
    CRASH_CHILD_MAX_MS = 30000,
    CRASH_WINDOW = 16,       /* commits in flight in the child */
};

static void crash_kv(uint32_t i, char *k, size_t ksize, char *v, size_t vsize)
{
    snprintf(k, ksize, "ack/%08u", i);
    snprintf(v, vsize, "value-%u-%u", i, i * 2654435761u);
}

struct crash_child {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inflight;
    int fd;
    bool broken;
};

struct crash_commit {
    struct crash_child *c;
    mdm_batch_t *b;
    uint32_t i;
};

static void on_crash_done(void *arg, int status)
{
    struct crash_commit *cc = arg;
    struct crash_child *c = cc->c;
    bool ok = status == 0;
    /* acknowledged: only now may anyone rely on it (4 bytes: an atomic pipe write) */
    if (ok && write(c->fd, &cc->i, sizeof(cc->i)) != (ssize_t)sizeof(cc->i))
        ok = false;
    mdm_batch_free(cc->b);
    free(cc);
    pthread_mutex_lock(&c->lock);
    c->inflight--;
    if (!ok)
        c->broken = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int crash_child_main(const char *dir, int fd)
{
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 2);
    if (!s)
        return 99;
    struct crash_child c = {.lock = PTHREAD_MUTEX_INITIALIZER,
                            .cond = PTHREAD_COND_INITIALIZER, .fd = fd};
    uint64_t deadline = mdm_now_ms() + CRASH_CHILD_MAX_MS;
    for (uint32_t i = 0; i < CRASH_MAX && mdm_now_ms() < deadline; i++) {
        pthread_mutex_lock(&c.lock);
        while (c.inflight >= CRASH_WINDOW)
            pthread_cond_wait(&c.cond, &c.lock);
        bool broken = c.broken;
        c.inflight++;
        pthread_mutex_unlock(&c.lock);
        if (broken)
            break;
        struct crash_commit *cc = malloc(sizeof(*cc));
        cc->c = &c;
        cc->b = mdm_batch_new();
        cc->i = i;
        char k[32], v[64];
        crash_kv(i, k, sizeof(k), v, sizeof(v));
        put_str(cc->b, MDM_CF_QUEUE, k, v);
        /* a second record in the same batch: batches must be all-or-nothing */
        k[0] = 'p';
        put_str(cc->b, MDM_CF_QUEUE, k, v);
        if (mdm_store_commit_async(s, cc->b, on_crash_done, cc) != 0)
            return 99;
    }
    mdm_store_close(s);
    return 0;
}

struct crash_check {
    mdm_store_t *s;
    int present;
    int torn; /* "ack/i" without "pck/i" or the other way round, or a wrong value */
};

static int on_crash_record(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct crash_check *cc = arg;
    char k[32], want_k[32], want_v[64];
    if (klen >= sizeof(k)) {
        cc->torn++;
        return 0;
    }
    memcpy(k, key, klen);
    k[klen] = 0;
    uint32_t i = (uint32_t)strtoul(k + 4, NULL, 10);
    crash_kv(i, want_k, sizeof(want_k), want_v, sizeof(want_v));
    if (strcmp(k, want_k) != 0 || vlen != strlen(want_v) || memcmp(val, want_v, vlen) != 0)
        cc->torn++;
    k[0] = 'p';
    if (get_is(cc->s, MDM_CF_QUEUE, k, want_v) != 0)
        cc->torn++;
    cc->present++;
    return 0;
}

static void test_crash(const char *self)
{
    char *dir = tmpdir("store-crash");
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char fdstr[16];
        snprintf(fdstr, sizeof(fdstr), "%d", fds[1]);
        execl(self, self, "crash-child", dir, fdstr, (char *)NULL);
        _exit(98);
    }
    CHECK(pid > 0);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        free(dir);
        return;
    }

    uint8_t *acked = calloc(CRASH_MAX, 1);
    uint32_t nacked = 0, max_acked = 0;
    uint64_t deadline = mdm_now_ms() + CRASH_WAIT_MS;
    uint8_t buf[4096];
    size_t have = 0;
    bool eof = false;
    while (nacked < CRASH_ACKS && !eof) {
        uint64_t now = mdm_now_ms();
        if (now >= deadline)
            break;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t n = read(fds[0], buf + have, sizeof(buf) - have);
        if (n <= 0) {
            eof = n == 0;
            if (n < 0 && errno != EINTR)
                eof = true;
            continue;
        }
        have += (size_t)n;
        size_t whole = have / 4 * 4;
        for (size_t off = 0; off < whole; off += 4) {
            uint32_t i;
            memcpy(&i, buf + off, 4);
            if (i < CRASH_MAX && !acked[i]) {
                acked[i] = 1;
                nacked++;
                if (i > max_acked)
                    max_acked = i;
            }
        }
        memmove(buf, buf + whole, have - whole);
        have -= whole;
    }
    CHECK(!eof); /* the child was still committing when killed */
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(fds[0]);
    /* Acks still buffered in the pipe after the kill are ignored: fewer to check, no harm. */
    CHECK(nacked >= 50);

    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 1);
    CHECK(s != NULL);
    if (s) {
        int lost = 0;
        for (uint32_t i = 0; i <= max_acked; i++) {
            if (!acked[i])
                continue;
            char k[32], v[64];
            crash_kv(i, k, sizeof(k), v, sizeof(v));
            if (get_is(s, MDM_CF_QUEUE, k, v) != 0)
                lost++;
        }
        CHECK_EQ_INT(lost, 0);
        struct crash_check cc = {.s = s};
        CHECK_EQ_INT(mdm_store_iter_prefix(s, MDM_CF_QUEUE, "ack/", 4, on_crash_record, &cc), 0);
        CHECK(cc.present >= (int)nacked);
        CHECK_EQ_INT(cc.torn, 0);
        printf("# crash: %u acknowledged before SIGKILL, %d present after reopen, %d lost\n",
               nacked, cc.present, lost);
        mdm_store_close(s);
    }
    free(acked);
    rm_rf(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    mdm_log_setup(MDM_LOG_WARN, false);
    if (argc == 4 && strcmp(argv[1], "crash-child") == 0)
        return crash_child_main(argv[2], atoi(argv[3]));
    signal(SIGPIPE, SIG_IGN);
    test_crud();
    test_iteration();
    test_async();
    test_concurrent();
    test_schema();
    test_persistence();
    test_crash("/proc/self/exe");
    return check_finish("store");
}
