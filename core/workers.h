/*
 * workers: a small pool of threads for CPU-heavy work that must not run on a shard thread
 * (e.g. verifying request signatures). A job's fn runs on a worker and is responsible for
 * handing its result back (typically mdm_shard_post to the shard that asked).
 */
#ifndef MDM_CORE_WORKERS_H
#define MDM_CORE_WORKERS_H

#include "core/common.h"

typedef struct mdm_workers mdm_workers_t;
typedef void (*mdm_worker_fn)(void *arg);

/**
 * Starts n threads named name. thread_exit (may be NULL) runs on each worker before it ends
 * (e.g. to free per-thread library caches). Returns 0, -ENOMEM or -errno.
 */
MDM_MUST_CHECK int mdm_workers_new(mdm_workers_t **out, unsigned n, const char *name,
                                   void (*thread_exit)(void));

/** Queues fn(arg) (any thread). Returns 0, -ENOMEM, or -ESHUTDOWN once freeing started. */
MDM_MUST_CHECK int mdm_workers_run(mdm_workers_t *w, mdm_worker_fn fn, void *arg);

/** Runs every queued job, then joins and frees the pool. NULL is ignored. */
void mdm_workers_free(mdm_workers_t *w);

#endif
