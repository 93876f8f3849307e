/*
 * storage/store: durable state behind a narrow, batch-first interface over RocksDB.
 *
 * - One column family per record kind (enum mdm_store_cf). The column family names, the key
 *   layouts and the binary record codecs stay inside storage/: callers outside storage/ use
 *   the typed helpers (devices, command queue, secrets, ...) that later modules add on top
 *   of this file, never raw keys. Nothing outside storage/ includes rocksdb/c.h.
 * - Writes go through batches (mdm_batch_t): a handler appends to its shard's batch, and the
 *   whole batch is committed atomically on a storage worker thread. Concurrent commits are
 *   grouped: one worker writes every queued batch with a single RocksDB write (one fsync),
 *   in the order mdm_store_commit_async() accepted them, so a later batch always wins over
 *   an earlier one for the same key.
 * - Reads: synchronous get and prefix iteration (init, tools, storage workers), and for cold
 *   reads from a shard thread an asynchronous get or a job (mdm_store_run_async) that runs
 *   several synchronous reads on a worker and posts its result back.
 * - A schema version lives in MDM_CF_META under "schema_version"; mdm_store_open() migrates
 *   older databases one version at a time and refuses newer ones.
 *
 * The header stays small on purpose so that an in-memory fake is easy to write.
 */
#ifndef MDM_STORAGE_STORE_H
#define MDM_STORAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"

typedef struct mdm_store mdm_store_t;
typedef struct mdm_batch mdm_batch_t;

/** Record kinds; each is its own column family ("meta", "devices", ...). */
enum mdm_store_cf {
    MDM_CF_META,     /* schema version, instance settings */
    MDM_CF_DEVICES,  /* device records */
    MDM_CF_COMMANDS, /* command records, stored once per command */
    MDM_CF_QUEUE,    /* small per-device queue entries pointing at commands */
    MDM_CF_HISTORY,  /* answered commands and responses, with retention */
    MDM_CF_SECRETS,  /* sealed secrets (core/seal envelopes) */
    MDM_CF_AUDIT,    /* audit events */
    MDM_CF_PROBE,    /* health checks and benchmarks */
    MDM_CF_USERS,    /* device user channels (UserID per device: token, push magic) */
    MDM_CF_ENROLL,   /* enrollment: local users, invitations, SCEP challenges, enrollments */
    MDM_CF_POLICY,   /* policies, delivery groups, deployments, application inventory */
    MDM_CF_COUNT
};

/** How far a commit is durable when its done callback reports success. */
enum mdm_durability {
    MDM_DURABILITY_FSYNC, /* WAL + fsync per group commit: survives power loss (default) */
    MDM_DURABILITY_WAL,   /* WAL without fsync: survives a process crash, not power loss */
    MDM_DURABILITY_NONE,  /* no WAL: loses recent commits on any crash; tests/bench only */
};

struct mdm_store_options {
    const char *path;                /* database directory; created if missing */
    enum mdm_durability durability;  /* 0 = MDM_DURABILITY_FSYNC */
    unsigned threads;                /* storage worker threads; 0: 2 */
    size_t cache_mb;                 /* block cache in MiB; 0: 64 */
    void (*thread_exit)(void);       /* runs on each worker before it ends (jobs may have used
                                        per-thread caches, e.g. a crypto library's); NULL */
};

/** Current schema version written by this code. */
#define MDM_STORE_SCHEMA_VERSION 3u

/**
 * Opens (creating if missing) the database at opt->path with all column families, starts
 * the worker threads, checks the schema version and runs migrations (older version n is
 * brought to n+1, ... up to MDM_STORE_SCHEMA_VERSION, each step committed with its version
 * bump in one atomic batch). On success *out owns the store; free with mdm_store_close().
 * Returns 0; MDM_ESTORE (engine failure, logged); MDM_ECONFIG when the database has a newer
 * schema than this code or a schema record that cannot be read (logged); -ENOMEM; -EINVAL
 * for bad options; or the code of a failed migration.
 */
MDM_MUST_CHECK int mdm_store_open(mdm_store_t **out, const struct mdm_store_options *opt);

/**
 * Stops accepting work, lets the workers finish every queued commit, get and job (their
 * callbacks run as usual; work they try to queue from now on gets -ESHUTDOWN), joins the
 * workers and closes the database. Not from a storage callback or job. NULL is a no-op.
 */
void mdm_store_close(mdm_store_t *s);

/**
 * Creates an empty batch (NULL when out of memory). The caller owns it and frees it with
 * mdm_batch_free(); a batch can be reused after mdm_batch_clear() (its memory is kept, so a
 * shard's batch stops allocating once warm). A batch is bound to no store.
 */
mdm_batch_t *mdm_batch_new(void);
void mdm_batch_free(mdm_batch_t *b);

/**
 * Appends a put / delete. Key and value are copied. Keys and values are limited to 4 GiB - 1.
 * An allocation failure is remembered and reported by the commit (-ENOMEM) instead of
 * writing a partial batch. Not while the batch is being committed.
 */
void mdm_batch_put(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                   const void *val, size_t vlen);
void mdm_batch_delete(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen);

/** Number of puts and deletes in the batch. */
size_t mdm_batch_count(const mdm_batch_t *b);

/** Payload bytes (keys + values) in the batch; a shard can cap its batch with it. */
size_t mdm_batch_bytes(const mdm_batch_t *b);

/** Empties the batch (and forgets a remembered allocation failure); keeps its memory. */
void mdm_batch_clear(mdm_batch_t *b);

/** Called once per accepted commit, ON A STORAGE WORKER THREAD; status 0 or MDM_ESTORE. */
typedef void (*mdm_store_done_cb)(void *arg, int status);

/**
 * Queues b for a group commit with the store's durability. done(arg, status) runs on a
 * worker thread once the batch is durable (status 0) or failed (MDM_ESTORE, nothing of the
 * batch written); a shard posts it back to its own loop. From acceptance until done returns
 * the store borrows b: do not touch it; inside done or later the caller may free, clear or
 * reuse it. Batches are applied in acceptance order. An empty batch completes with 0.
 * Returns 0 (done will be called), or without calling done: -ENOMEM (the batch recorded an
 * allocation failure), -ESHUTDOWN (the store is closing).
 */
MDM_MUST_CHECK int mdm_store_commit_async(mdm_store_t *s, mdm_batch_t *b, mdm_store_done_cb done,
                                          void *arg);

/**
 * Commits b and waits for it (through the same worker queue, so ordering with asynchronous
 * commits holds). For init, tools, migrations and tests: never on a shard thread nor in a
 * storage callback. Returns 0, MDM_ESTORE, -ENOMEM or -ESHUTDOWN.
 */
MDM_MUST_CHECK int mdm_store_commit(mdm_store_t *s, mdm_batch_t *b);

/**
 * Reads one record synchronously and appends its value to val (reset val first to reuse it).
 * Sees every commit whose done has run. Returns 0, MDM_ENOTFOUND, MDM_ESTORE, or -ENOMEM /
 * MDM_ETOOBIG from val.
 */
MDM_MUST_CHECK int mdm_store_get(mdm_store_t *s, enum mdm_store_cf cf, const void *key,
                                 size_t klen, mdm_buf_t *val);

/** Result of an asynchronous get, ON A WORKER THREAD; val is valid only during the call. */
typedef void (*mdm_store_get_cb)(void *arg, int status, const void *val, size_t vlen);

/**
 * Reads one record on a worker thread (cold reads from a shard). The key is copied. cb gets
 * status 0 with the value, or MDM_ENOTFOUND / MDM_ESTORE with (NULL, 0).
 * Returns 0 (cb will be called), or without calling cb: -ENOMEM, -ESHUTDOWN.
 */
MDM_MUST_CHECK int mdm_store_get_async(mdm_store_t *s, enum mdm_store_cf cf, const void *key,
                                       size_t klen, mdm_store_get_cb cb, void *arg);

/**
 * A job: runs ON A STORAGE WORKER THREAD, where the synchronous reads (mdm_store_get,
 * mdm_store_get_view, mdm_store_iter_*, the typed reads of storage/mdm.h) are allowed. It
 * owns the delivery of its result (a shard posts it back to its own loop). It may queue
 * commits and jobs (-ESHUTDOWN once the store is closing) but must not wait for them
 * (mdm_store_commit, mdm_store_close).
 */
typedef void (*mdm_store_job_fn)(mdm_store_t *s, void *arg);

/**
 * Queues fn(s, arg) for a worker (cold reads that need more than one get). Jobs start in the
 * order they were queued; several may run at once on different workers. Commits are served
 * first, but jobs never wait for a commit in progress.
 * Returns 0 (fn will run, also when the store is closed meanwhile), or without running fn:
 * -ENOMEM, -ESHUTDOWN (the store is closing).
 */
MDM_MUST_CHECK int mdm_store_run_async(mdm_store_t *s, mdm_store_job_fn fn, void *arg);

/**
 * Called for each record of an iteration; key and val are valid only during the call.
 * Return 0 to continue, nonzero to stop (mdm_store_iter_prefix then returns that value).
 */
typedef int (*mdm_store_iter_cb)(void *arg, const void *key, size_t klen, const void *val,
                                 size_t vlen);

/**
 * Calls cb for every record of cf whose key starts with prefix (plen 0: all records), in
 * ascending bytewise key order, synchronously on the caller's thread, over a consistent
 * snapshot. Returns 0 when all were visited, cb's nonzero value when it stopped (so a
 * callback can hand back its own error code), MDM_ESTORE, or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_store_iter_prefix(mdm_store_t *s, enum mdm_store_cf cf,
                                         const void *prefix, size_t plen, mdm_store_iter_cb cb,
                                         void *arg);

/**
 * mdm_store_iter_prefix for paging: only keys strictly greater than `after` (alen 0: no such
 * limit) are visited. Same returns.
 */
MDM_MUST_CHECK int mdm_store_iter_after(mdm_store_t *s, enum mdm_store_cf cf, const void *prefix,
                                        size_t plen, const void *after, size_t alen,
                                        mdm_store_iter_cb cb, void *arg);

struct mdm_store_stats {
    uint64_t commits;         /* batches acknowledged durable (done with status 0) */
    uint64_t records;         /* puts + deletes in those batches */
    uint64_t fsyncs;          /* synced RocksDB writes (one per group under FSYNC) */
    uint64_t commit_us_total; /* sum over those batches of accept-to-durable time, in us */
    uint64_t writes;          /* RocksDB writes (groups); commits / writes = group size */
    uint64_t failures;        /* batches that failed (done with MDM_ESTORE) */
    uint64_t gets;            /* point reads, synchronous and asynchronous */
};

/** Copies a snapshot of the counters (any thread). */
void mdm_store_get_stats(mdm_store_t *s, struct mdm_store_stats *st);

/* ---- Record codecs (storage/ only) --------------------------------------------------------- */

/**
 * Appends a put whose vlen value bytes the caller writes in place (encoders, without an
 * intermediate buffer) and returns where they go; NULL after an allocation failure, which the
 * batch remembers as mdm_batch_put() does. The pointer is valid until the next change to b.
 */
uint8_t *mdm_batch_put_space(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                             size_t vlen);

/** Sees a value in place; returns 0 or a code that the read then returns. */
typedef int (*mdm_store_view_cb)(void *arg, const void *val, size_t vlen);

/**
 * Synchronous point read without a copy: calls view(arg, val, vlen) on the caller's thread with
 * the value pinned in the engine (valid only during the call), only when the record exists.
 * Returns view's value, MDM_ENOTFOUND or MDM_ESTORE.
 */
MDM_MUST_CHECK int mdm_store_get_view(mdm_store_t *s, enum mdm_store_cf cf, const void *key,
                                      size_t klen, mdm_store_view_cb view, void *arg);

/* ---- Migrations (storage/ only) ----------------------------------------------------------
 *
 * A migration brings the database from schema version `from` to from+1. It may read the
 * store (mdm_store_get, mdm_store_iter_prefix) and commit intermediate batches itself
 * (mdm_store_commit; each step must then be idempotent, since a crash may repeat it), and
 * appends its final writes to b; the store adds the version bump to b and commits it
 * atomically. Returns 0 or a negative code, which aborts mdm_store_open() with that code.
 */
typedef int (*mdm_store_migration_fn)(mdm_store_t *s, mdm_batch_t *b, uint32_t from);

/**
 * TESTS ONLY: pretends the code's schema version is `current` and that fn migrates
 * current-1 -> current (fn NULL: no extra step). mdm_store_testing_schema(0, NULL) restores
 * the real table. Not thread-safe; call before mdm_store_open().
 */
void mdm_store_testing_schema(uint32_t current, mdm_store_migration_fn fn);

#endif
