/*
 * storage/store: RocksDB behind the batch-first interface of store.h.
 *
 * Design
 * - Batches are our own compact op log ([op][cf][klen][vlen][key][val]...), bound to no store,
 *   so a shard fills one without touching RocksDB and reuses its memory after a clear.
 * - A pool of worker threads shares one mutex + condvar and two FIFO queues: commits (the
 *   batch itself is the queue node, so accepting a commit allocates nothing) and jobs (one
 *   small allocation each; an asynchronous get is a job whose allocation also holds the key).
 *   Shape as redis src/bio.c: jobs in, completion out.
 * - Group commit: at most one worker is "the committer" at a time. It takes every queued
 *   batch (up to GROUP_BYTES_MAX), translates them in acceptance order into one RocksDB write
 *   batch and writes it once (one fsync under MDM_DURABILITY_FSYNC), then gives up the role
 *   and runs the done callbacks in order. While it writes, new commits pile up for the next
 *   group, so the fsync rate stays flat however many shards commit. Since groups are written
 *   one after another and ops inside a write batch apply in order, commits apply in
 *   acceptance order.
 * - Other workers run jobs (cold reads) meanwhile; reads never wait for the committer.
 *
 * Invariants
 * - A batch with queued == true belongs to the store until just before its done runs.
 * - closing is set once, under lock; afterwards nothing new is accepted and the workers exit
 *   when both queues are empty.
 * - Every job is one allocation that starts with its struct job; the worker frees it after
 *   its fn returns.
 *
 * Threads: the public functions may be called from any thread (mdm_store_commit and
 * mdm_store_close not from a storage callback); callbacks run on worker threads.
 */
#include "storage/store.h"

#include <rocksdb/c.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

#define THREADS_DEFAULT 2u
#define THREADS_MAX 64u
#define CACHE_MB_DEFAULT 64u
#define GROUP_BYTES_MAX (32u << 20) /* one RocksDB write per group; bounds its memory */
#define SCHEMA_KEY "schema_version"

static const char *const cf_names[MDM_CF_COUNT] = {
    [MDM_CF_META] = "meta",       [MDM_CF_DEVICES] = "devices", [MDM_CF_COMMANDS] = "commands",
    [MDM_CF_QUEUE] = "queue",     [MDM_CF_HISTORY] = "history", [MDM_CF_SECRETS] = "secrets",
    [MDM_CF_AUDIT] = "audit",     [MDM_CF_PROBE] = "probe",   [MDM_CF_USERS] = "users",
    [MDM_CF_ENROLL] = "enroll",
    [MDM_CF_POLICY] = "policy",
};

/* ---- batches ----------------------------------------------------------------------------- */

enum batch_op { OP_PUT = 1, OP_DELETE = 2 };

/* Encoded op header; key (and value for puts) follow it unaligned. */
#define OP_HDR_LEN (1 + 1 + 4 + 4)

struct mdm_batch {
    uint8_t *data; /* encoded ops */
    size_t len;    /* bytes used in data */
    size_t cap;    /* bytes allocated */
    size_t count;  /* ops */
    size_t bytes;  /* key + value payload bytes */
    int error;     /* sticky -ENOMEM since the last clear */

    /* while queued for commit (owned by the store) */
    bool queued;
    struct mdm_batch *next;
    mdm_store_done_cb done;
    void *arg;
    uint64_t accept_us;
};

mdm_batch_t *mdm_batch_new(void)
{
    return calloc(1, sizeof(mdm_batch_t));
}

void mdm_batch_free(mdm_batch_t *b)
{
    if (!b)
        return;
    assert(!b->queued);
    free(b->data);
    free(b);
}

static uint8_t *batch_reserve(mdm_batch_t *b, size_t n)
{
    if (b->error)
        return NULL;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->error = -ENOMEM;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->error = -ENOMEM;
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

/* Appends an op and returns where its vlen value bytes go (NULL after an allocation failure,
 * which the batch remembers). */
static uint8_t *batch_append(mdm_batch_t *b, enum batch_op op, enum mdm_store_cf cf,
                             const void *key, size_t klen, size_t vlen)
{
    assert(b && !b->queued);
    assert((unsigned)cf < MDM_CF_COUNT);
    assert(key || klen == 0);
    assert(klen < UINT32_MAX && vlen < UINT32_MAX);
    uint8_t *p = batch_reserve(b, OP_HDR_LEN + klen + vlen);
    if (!p)
        return NULL;
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    p[0] = (uint8_t)op;
    p[1] = (uint8_t)cf;
    memcpy(p + 2, &k32, 4);
    memcpy(p + 6, &v32, 4);
    if (klen)
        memcpy(p + OP_HDR_LEN, key, klen);
    b->len += OP_HDR_LEN + klen + vlen;
    b->count++;
    b->bytes += klen + vlen;
    return p + OP_HDR_LEN + klen;
}

void mdm_batch_put(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                   const void *val, size_t vlen)
{
    assert(val || vlen == 0);
    uint8_t *p = batch_append(b, OP_PUT, cf, key, klen, vlen);
    if (p && vlen)
        memcpy(p, val, vlen);
}

uint8_t *mdm_batch_put_space(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                             size_t vlen)
{
    return batch_append(b, OP_PUT, cf, key, klen, vlen);
}

void mdm_batch_delete(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen)
{
    (void)batch_append(b, OP_DELETE, cf, key, klen, 0);
}

size_t mdm_batch_count(const mdm_batch_t *b)
{
    return b->count;
}

size_t mdm_batch_bytes(const mdm_batch_t *b)
{
    return b->bytes;
}

void mdm_batch_clear(mdm_batch_t *b)
{
    assert(!b->queued);
    b->len = b->count = b->bytes = 0;
    b->error = 0;
}

/* ---- the store --------------------------------------------------------------------------- */

/* A queued job; the first member of its allocation (see the invariants above). */
struct job {
    struct job *next;
    mdm_store_job_fn fn;
    void *arg;
};

/* mdm_store_get_async as a job: one allocation with the key. */
struct get_job {
    struct job job; /* job.arg is the get_job itself */
    enum mdm_store_cf cf;
    mdm_store_get_cb cb;
    void *arg;
    size_t klen;
    uint8_t key[]; /* klen bytes */
};

struct mdm_store {
    void (*thread_exit)(void); /* run by each worker as it ends */
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *table_opts;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    rocksdb_column_family_handle_t *cf[MDM_CF_COUNT];
    rocksdb_column_family_handle_t **handles; /* every opened CF incl. default and unknown */
    size_t nhandles;
    rocksdb_writebatch_t *wb; /* reused by the committer only */
    enum mdm_durability durability;
    char *path;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    mdm_batch_t *commit_head, *commit_tail; /* guarded by lock */
    struct job *job_head, *job_tail;         /* guarded by lock */
    bool committing;                         /* a worker holds the committer role */
    bool closing;
    pthread_t *threads;
    unsigned nthreads; /* started */

    struct mdm_store_stats stats; /* guarded by lock, except gets */
    atomic_uint_fast64_t gets;
};

/* Set on worker threads: catches mdm_store_commit / close from a callback. */
static _Thread_local mdm_store_t *worker_of;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Logs and frees a RocksDB error; returns MDM_ESTORE, or 0 when there was none. */
static int take_error(char *err, const char *what, const mdm_store_t *s)
{
    if (!err)
        return 0;
    mdm_error("store", "%s (%s): %s", what, s->path, err);
    rocksdb_free(err);
    return MDM_ESTORE;
}

/* ---- worker side -------------------------------------------------------------------------- */

/* Detaches the next group from the commit queue. Called with lock held. */
static mdm_batch_t *take_group(mdm_store_t *s)
{
    mdm_batch_t *first = s->commit_head, *last = first;
    size_t bytes = first->len;
    while (last->next && bytes + last->next->len <= GROUP_BYTES_MAX) {
        last = last->next;
        bytes += last->len;
    }
    s->commit_head = last->next;
    if (!s->commit_head)
        s->commit_tail = NULL;
    last->next = NULL;
    return first;
}

/* Writes a group with one RocksDB write. Runs on the committer, without lock. */
static int write_group(mdm_store_t *s, mdm_batch_t *group, bool *wrote)
{
    size_t ops = 0, nbatches = 0;
    rocksdb_writebatch_clear(s->wb);
    for (mdm_batch_t *b = group; b; b = b->next) {
        nbatches++;
        const uint8_t *p = b->data, *end = b->data + b->len;
        while (p < end) {
            uint32_t klen, vlen;
            memcpy(&klen, p + 2, 4);
            memcpy(&vlen, p + 6, 4);
            rocksdb_column_family_handle_t *cf = s->cf[p[1]];
            const char *key = (const char *)p + OP_HDR_LEN;
            if (p[0] == OP_PUT)
                rocksdb_writebatch_put_cf(s->wb, cf, key, klen, key + klen, vlen);
            else
                rocksdb_writebatch_delete_cf(s->wb, cf, key, klen);
            p += OP_HDR_LEN + klen + vlen;
            ops++;
        }
        assert(p == end);
    }
    *wrote = ops > 0;
    if (ops == 0)
        return 0;
    char *err = NULL;
    rocksdb_write(s->db, s->wopts, s->wb, &err);
    if (err) {
        mdm_error("store", "commit of %zu batches (%zu records) failed (%s): %s", nbatches, ops,
                  s->path, err);
        rocksdb_free(err);
        return MDM_ESTORE;
    }
    return 0;
}

static void run_commit(mdm_store_t *s, mdm_batch_t *group)
{
    bool wrote = false;
    int status = write_group(s, group, &wrote);
    uint64_t t = now_us();

    pthread_mutex_lock(&s->lock);
    s->committing = false;
    if (s->commit_head) /* the next group is ready: let an idle worker write it now */
        pthread_cond_broadcast(&s->cond);
    if (wrote) {
        s->stats.writes++;
        if (s->durability == MDM_DURABILITY_FSYNC)
            s->stats.fsyncs++;
    }
    for (mdm_batch_t *b = group; b; b = b->next) {
        if (status == 0) {
            s->stats.commits++;
            s->stats.records += b->count;
            s->stats.commit_us_total += t - b->accept_us;
        } else {
            s->stats.failures++;
        }
    }
    pthread_mutex_unlock(&s->lock);

    /* done may free or requeue its batch: read next first, hand the batch back, then call. */
    for (mdm_batch_t *b = group, *next; b; b = next) {
        next = b->next;
        mdm_store_done_cb done = b->done;
        void *arg = b->arg;
        b->next = NULL;
        b->done = NULL;
        b->arg = NULL;
        b->queued = false;
        done(arg, status);
    }
}

/* Point read: view(arg, value) with the value pinned in RocksDB, only when found. */
static int get_view(mdm_store_t *s, enum mdm_store_cf cf, const void *key, size_t klen,
                    mdm_store_view_cb view, void *arg)
{
    atomic_fetch_add_explicit(&s->gets, 1, memory_order_relaxed);
    char *err = NULL;
    rocksdb_pinnableslice_t *ps =
        rocksdb_get_pinned_cf(s->db, s->ropts, s->cf[cf], key, klen, &err);
    int ret = take_error(err, "get", s);
    if (ret == 0 && !ps)
        ret = MDM_ENOTFOUND;
    if (ret == 0) {
        size_t vlen = 0;
        const char *v = rocksdb_pinnableslice_value(ps, &vlen);
        ret = view(arg, v, vlen);
    }
    if (ps)
        rocksdb_pinnableslice_destroy(ps);
    return ret;
}

static int view_append(void *arg, const void *val, size_t vlen)
{
    return mdm_buf_append(arg, val, vlen);
}

static int view_get_job(void *arg, const void *val, size_t vlen)
{
    struct get_job *gj = arg;
    gj->cb(gj->arg, 0, val, vlen);
    gj->cb = NULL; /* called */
    return 0;
}

static void run_get_job(mdm_store_t *s, void *arg)
{
    struct get_job *gj = arg;
    mdm_store_get_cb cb = gj->cb;
    int ret = get_view(s, gj->cf, gj->key, gj->klen, view_get_job, gj);
    if (gj->cb) /* not found or failed: the view did not run */
        cb(gj->arg, ret, NULL, 0);
}

static void *worker_main(void *arg)
{
    mdm_store_t *s = arg;
    worker_of = s;
    pthread_setname_np(pthread_self(), "mdm-store");
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (!s->committing && s->commit_head) {
            mdm_batch_t *group = take_group(s);
            s->committing = true;
            pthread_mutex_unlock(&s->lock);
            run_commit(s, group);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (s->job_head) {
            struct job *job = s->job_head;
            s->job_head = job->next;
            if (!s->job_head)
                s->job_tail = NULL;
            pthread_mutex_unlock(&s->lock);
            job->fn(s, job->arg);
            free(job);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (s->closing && !s->commit_head && !s->job_head)
            break;
        pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    if (s->thread_exit)
        s->thread_exit();
    return NULL;
}

/* ---- commits and reads --------------------------------------------------------------------- */

int mdm_store_commit_async(mdm_store_t *s, mdm_batch_t *b, mdm_store_done_cb done, void *arg)
{
    assert(s && b && done);
    assert(!b->queued);
    if (b->error)
        return b->error;
    uint64_t t = now_us();
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        return -ESHUTDOWN;
    }
    b->queued = true;
    b->next = NULL;
    b->done = done;
    b->arg = arg;
    b->accept_us = t;
    if (s->commit_tail)
        s->commit_tail->next = b;
    else
        s->commit_head = b;
    s->commit_tail = b;
    if (!s->committing) /* otherwise the committer wakes a worker when it is done */
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

struct sync_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int status;
};

static void on_sync_done(void *arg, int status)
{
    struct sync_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->status = status;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int mdm_store_commit(mdm_store_t *s, mdm_batch_t *b)
{
    assert(worker_of != s); /* would wait for itself with one worker */
    struct sync_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    int ret = mdm_store_commit_async(s, b, on_sync_done, &w);
    if (ret != 0)
        return ret;
    pthread_mutex_lock(&w.lock);
    while (!w.done)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return w.status;
}

int mdm_store_get(mdm_store_t *s, enum mdm_store_cf cf, const void *key, size_t klen,
                  mdm_buf_t *val)
{
    assert(s && val && (unsigned)cf < MDM_CF_COUNT);
    assert(key || klen == 0);
    return get_view(s, cf, key, klen, view_append, val);
}

int mdm_store_get_view(mdm_store_t *s, enum mdm_store_cf cf, const void *key, size_t klen,
                       mdm_store_view_cb view, void *arg)
{
    assert(s && view && (unsigned)cf < MDM_CF_COUNT);
    assert(key || klen == 0);
    return get_view(s, cf, key, klen, view, arg);
}

/* Queues job (fn and arg set). On failure the job is not freed. */
static int push_job(mdm_store_t *s, struct job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        return -ESHUTDOWN;
    }
    if (s->job_tail)
        s->job_tail->next = job;
    else
        s->job_head = job;
    s->job_tail = job;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int mdm_store_run_async(mdm_store_t *s, mdm_store_job_fn fn, void *arg)
{
    assert(s && fn);
    struct job *job = malloc(sizeof(*job));
    if (!job)
        return -ENOMEM;
    job->fn = fn;
    job->arg = arg;
    int ret = push_job(s, job);
    if (ret != 0)
        free(job);
    return ret;
}

int mdm_store_get_async(mdm_store_t *s, enum mdm_store_cf cf, const void *key, size_t klen,
                        mdm_store_get_cb cb, void *arg)
{
    assert(s && cb && (unsigned)cf < MDM_CF_COUNT);
    assert(key || klen == 0);
    struct get_job *gj = malloc(sizeof(*gj) + klen);
    if (!gj)
        return -ENOMEM;
    gj->job.fn = run_get_job;
    gj->job.arg = gj;
    gj->cf = cf;
    gj->cb = cb;
    gj->arg = arg;
    gj->klen = klen;
    if (klen)
        memcpy(gj->key, key, klen);
    int ret = push_job(s, &gj->job);
    if (ret != 0)
        free(gj);
    return ret;
}

/* Bytewise key order, as RocksDB's default comparator. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

int mdm_store_iter_after(mdm_store_t *s, enum mdm_store_cf cf, const void *prefix, size_t plen,
                         const void *after, size_t alen, mdm_store_iter_cb cb, void *arg)
{
    assert(s && cb && (unsigned)cf < MDM_CF_COUNT);
    assert(prefix || plen == 0);
    assert(after || alen == 0);
    int ret = 0;
    /* Upper bound = the prefix's successor: drop trailing 0xff bytes, increment the last one.
     * A prefix of only 0xff bytes has no successor; the loop's prefix test ends it. */
    uint8_t bound_small[128];
    uint8_t *bound = plen <= sizeof(bound_small) ? bound_small : malloc(plen);
    if (!bound)
        return -ENOMEM;
    size_t blen = plen;
    if (plen)
        memcpy(bound, prefix, plen);
    while (blen > 0 && bound[blen - 1] == 0xff)
        blen--;
    if (blen > 0)
        bound[blen - 1]++;
    /* Start at the prefix, or at `after` when that lies beyond it (then skip `after` itself). */
    bool from_after = alen > 0 && key_cmp(after, alen, prefix, plen) > 0;

    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    if (blen > 0) /* RocksDB keeps a pointer to bound: it must outlive the iterator */
        rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)bound, blen);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[cf]);
    if (from_after)
        rocksdb_iter_seek(it, after, alen);
    else if (plen)
        rocksdb_iter_seek(it, prefix, plen);
    else
        rocksdb_iter_seek_to_first(it);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < plen || (plen && memcmp(k, prefix, plen) != 0))
            break;
        if (from_after && key_cmp(k, klen, after, alen) <= 0)
            continue;
        const char *v = rocksdb_iter_value(it, &vlen);
        if ((ret = cb(arg, k, klen, v, vlen)) != 0)
            break;
    }
    if (ret == 0) {
        char *err = NULL;
        rocksdb_iter_get_error(it, &err);
        ret = take_error(err, "iteration", s);
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    if (bound != bound_small)
        free(bound);
    return ret;
}

int mdm_store_iter_prefix(mdm_store_t *s, enum mdm_store_cf cf, const void *prefix, size_t plen,
                          mdm_store_iter_cb cb, void *arg)
{
    return mdm_store_iter_after(s, cf, prefix, plen, NULL, 0, cb, arg);
}

void mdm_store_get_stats(mdm_store_t *s, struct mdm_store_stats *st)
{
    pthread_mutex_lock(&s->lock);
    *st = s->stats;
    pthread_mutex_unlock(&s->lock);
    st->gets = atomic_load_explicit(&s->gets, memory_order_relaxed);
}

/* ---- schema versions and migrations ------------------------------------------------------- */

/* migrations[n] brings schema n to n+1 (NULL: version bump only). Index 0 is unused: the
 * first schema is 1. Append one entry with each MDM_STORE_SCHEMA_VERSION bump. */
static const mdm_store_migration_fn migrations[MDM_STORE_SCHEMA_VERSION] = {
    NULL,
    NULL, /* 1 -> 2: the "users" and "enroll" column families (created on open) */
    NULL, /* 2 -> 3: the "policy" column family (created on open) */
};

static uint32_t testing_current;              /* 0: the real MDM_STORE_SCHEMA_VERSION */
static mdm_store_migration_fn testing_fn;     /* testing_current-1 -> testing_current */

void mdm_store_testing_schema(uint32_t current, mdm_store_migration_fn fn)
{
    testing_current = current;
    testing_fn = current ? fn : NULL;
}

static uint32_t code_schema(void)
{
    return testing_current ? testing_current : MDM_STORE_SCHEMA_VERSION;
}

static mdm_store_migration_fn migration_from(uint32_t from)
{
    if (testing_current && from + 1 == testing_current)
        return testing_fn;
    return from < MDM_ARRAY_LEN(migrations) ? migrations[from] : NULL;
}

static void put_schema(mdm_batch_t *b, uint32_t v)
{
    uint8_t enc[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mdm_batch_put(b, MDM_CF_META, SCHEMA_KEY, strlen(SCHEMA_KEY), enc, sizeof(enc));
}

static int check_schema(mdm_store_t *s)
{
    uint32_t want = code_schema();
    mdm_buf_t val;
    mdm_buf_init(&val, 64);
    mdm_batch_t *b = mdm_batch_new();
    int ret = b ? 0 : -ENOMEM;
    if (ret != 0)
        goto out;
    ret = mdm_store_get(s, MDM_CF_META, SCHEMA_KEY, strlen(SCHEMA_KEY), &val);
    if (ret == MDM_ENOTFOUND) { /* a new database */
        put_schema(b, want);
        ret = mdm_store_commit(s, b);
        if (ret == 0)
            mdm_info("store", "created database %s with schema version %u", s->path, want);
        goto out;
    }
    if (ret != 0)
        goto out;
    const uint8_t *p = mdm_buf_head(&val);
    uint32_t have = val.len == 4 ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                                       (uint32_t)p[2] << 8 | p[3]
                                 : 0;
    if (have == 0) {
        mdm_error("store", "database %s has an unreadable schema version record", s->path);
        ret = MDM_ECONFIG;
        goto out;
    }
    if (have > want) {
        mdm_error("store",
                  "database %s has schema version %u, newer than the %u this mdmd knows; "
                  "refusing to open it (run a newer mdmd or restore a matching backup)",
                  s->path, have, want);
        ret = MDM_ECONFIG;
        goto out;
    }
    for (uint32_t v = have; v < want; v++) {
        mdm_store_migration_fn fn = migration_from(v);
        mdm_info("store", "migrating database %s from schema version %u to %u", s->path, v,
                 v + 1);
        mdm_batch_clear(b);
        if (fn && (ret = fn(s, b, v)) != 0) {
            mdm_error("store", "migration of %s from schema version %u failed: %s", s->path, v,
                      mdm_strerror(ret));
            goto out;
        }
        put_schema(b, v + 1);
        if ((ret = mdm_store_commit(s, b)) != 0)
            goto out;
    }
out:
    mdm_batch_free(b);
    mdm_buf_dispose(&val);
    return ret;
}

/* ---- open and close ----------------------------------------------------------------------- */

static void stop_workers(mdm_store_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->closing = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    s->nthreads = 0;
    assert(!s->commit_head && !s->job_head);
}

static void destroy(mdm_store_t *s)
{
    if (s->db) {
        char *err = NULL;
        if (s->durability == MDM_DURABILITY_WAL) { /* a clean stop survives power loss too */
            rocksdb_flush_wal(s->db, 1, &err);
            (void)take_error(err, "WAL sync at close", s);
        } else if (s->durability == MDM_DURABILITY_NONE) { /* nothing in a WAL: flush now */
            rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
            rocksdb_flushoptions_set_wait(fo, 1);
            for (size_t i = 0; i < MDM_CF_COUNT; i++) {
                err = NULL;
                rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
                (void)take_error(err, "flush at close", s);
            }
            rocksdb_flushoptions_destroy(fo);
        }
    }
    for (size_t i = 0; i < s->nhandles; i++)
        if (s->handles[i])
            rocksdb_column_family_handle_destroy(s->handles[i]);
    if (s->db)
        rocksdb_close(s->db);
    if (s->wb)
        rocksdb_writebatch_destroy(s->wb);
    if (s->wopts)
        rocksdb_writeoptions_destroy(s->wopts);
    if (s->ropts)
        rocksdb_readoptions_destroy(s->ropts);
    if (s->opts)
        rocksdb_options_destroy(s->opts);
    if (s->table_opts)
        rocksdb_block_based_options_destroy(s->table_opts);
    if (s->cache)
        rocksdb_cache_destroy(s->cache);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->handles);
    free(s->threads);
    free(s->path);
    free(s);
}

void mdm_store_close(mdm_store_t *s)
{
    if (!s)
        return;
    assert(worker_of != s);
    stop_workers(s);
    destroy(s);
}

static int open_db(mdm_store_t *s, size_t cache_mb)
{
    int ret = 0;
    char *err = NULL;
    const char **names = NULL;
    const rocksdb_options_t **cf_opts = NULL;
    char **existing = NULL;
    size_t nexisting = 0;

    s->opts = rocksdb_options_create();
    s->table_opts = rocksdb_block_based_options_create();
    s->cache = rocksdb_cache_create_lru(cache_mb << 20);
    s->wopts = rocksdb_writeoptions_create();
    s->ropts = rocksdb_readoptions_create();
    s->wb = rocksdb_writebatch_create();
    if (!s->opts || !s->table_opts || !s->cache || !s->wopts || !s->ropts || !s->wb)
        return -ENOMEM;
    rocksdb_options_set_create_if_missing(s->opts, 1);
    rocksdb_options_set_create_missing_column_families(s->opts, 1);
    rocksdb_options_increase_parallelism(s->opts, 2);
    rocksdb_options_set_compaction_style(s->opts, rocksdb_level_compaction);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(s->opts, 1);
    rocksdb_options_set_keep_log_file_num(s->opts, 10);
    rocksdb_block_based_options_set_block_cache(s->table_opts, s->cache);
    /* Point reads dominate (device records, queue heads): a bloom filter skips most files. */
    rocksdb_block_based_options_set_filter_policy(s->table_opts,
                                                  rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(s->table_opts, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(s->table_opts, 1);
    rocksdb_options_set_block_based_table_factory(s->opts, s->table_opts);

    switch (s->durability) {
    case MDM_DURABILITY_FSYNC:
        rocksdb_writeoptions_set_sync(s->wopts, 1);
        break;
    case MDM_DURABILITY_WAL:
        rocksdb_writeoptions_set_sync(s->wopts, 0);
        break;
    case MDM_DURABILITY_NONE:
        rocksdb_writeoptions_disable_WAL(s->wopts, 1);
        break;
    }

    /* RocksDB must open every column family on disk: ours, "default", and any unknown one
     * (written by a newer mdmd; the schema check below then refuses the database). */
    existing = rocksdb_list_column_families(s->opts, s->path, &nexisting, &err);
    if (err) { /* usually: no database yet. The (empty) array is allocated all the same. */
        rocksdb_free(err);
        err = NULL;
        nexisting = 0;
    }
    size_t max = 1 + MDM_CF_COUNT + nexisting;
    names = calloc(max, sizeof(*names));
    cf_opts = calloc(max, sizeof(*cf_opts));
    s->handles = calloc(max, sizeof(*s->handles));
    if (!names || !cf_opts || !s->handles) {
        ret = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    names[n++] = "default";
    for (size_t i = 0; i < MDM_CF_COUNT; i++)
        names[n++] = cf_names[i];
    for (size_t i = 0; i < nexisting; i++) {
        bool known = false;
        for (size_t j = 0; j < n && !known; j++)
            known = strcmp(existing[i], names[j]) == 0;
        if (!known) {
            mdm_warn("store", "database %s has an unknown column family \"%s\"", s->path,
                     existing[i]);
            names[n++] = existing[i];
        }
    }
    for (size_t i = 0; i < n; i++)
        cf_opts[i] = s->opts;
    s->db = rocksdb_open_column_families(s->opts, s->path, (int)n, names, cf_opts, s->handles,
                                         &err);
    if ((ret = take_error(err, "cannot open database", s)) != 0) {
        s->db = NULL;
        goto out;
    }
    s->nhandles = n;
    for (size_t i = 0; i < MDM_CF_COUNT; i++)
        s->cf[i] = s->handles[1 + i];
out:
    if (existing)
        rocksdb_list_column_families_destroy(existing, nexisting);
    free(names);
    free(cf_opts);
    return ret;
}

int mdm_store_open(mdm_store_t **out, const struct mdm_store_options *opt)
{
    assert(out && opt);
    *out = NULL;
    if (!opt->path || !*opt->path || (unsigned)opt->durability > MDM_DURABILITY_NONE ||
        opt->threads > THREADS_MAX)
        return -EINVAL;
    mdm_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    atomic_init(&s->gets, 0);
    s->durability = opt->durability;
    s->thread_exit = opt->thread_exit;
    unsigned nthreads = opt->threads ? opt->threads : THREADS_DEFAULT;
    int ret = 0;
    s->path = strdup(opt->path);
    s->threads = calloc(nthreads, sizeof(*s->threads));
    if (!s->path || !s->threads) {
        ret = -ENOMEM;
        goto out;
    }
    if ((ret = open_db(s, opt->cache_mb ? opt->cache_mb : CACHE_MB_DEFAULT)) != 0)
        goto out;
    /* Workers start with every signal blocked, so signals reach the loop threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; s->nthreads < nthreads; s->nthreads++) {
        int err = pthread_create(&s->threads[s->nthreads], NULL, worker_main, s);
        if (err != 0) {
            mdm_error("store", "cannot start storage worker: %s", strerror(err));
            ret = -err;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0)
        goto out;
    if ((ret = check_schema(s)) != 0)
        goto out;
    static const char *const dur_names[] = {"fsync", "wal", "none"};
    mdm_info("store", "opened %s (durability %s, %u workers)", s->path,
             dur_names[s->durability], s->nthreads);
    *out = s;
out:
    if (ret != 0) {
        stop_workers(s);
        destroy(s);
    }
    return ret;
}
