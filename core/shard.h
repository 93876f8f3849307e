/*
 * shard: N event-loop threads, one io_uring ring each, talking only by messages.
 *
 * Nothing mutable is shared between shards. A message is an mdm_shard_msg_t embedded in the
 * sender's payload; posting it hands the payload to the target shard, whose thread runs
 * msg->fn. Each shard has an MPSC inbox (a short mutex-protected list swap) and an eventfd
 * that its ring keeps a read armed on; a post writes the eventfd only when the inbox was
 * empty, so a burst of messages costs one wake-up. Posting is allowed from any thread
 * (other shards, storage workers, the main thread).
 *
 * Shutdown: mdm_shards_stop() asks every shard to stop; each runs its stop hooks (stop
 * accepting, flush writes), keeps looping until every drain hook reports done or the
 * deadline passes, runs its finish hooks and exits.
 */
#ifndef MDM_CORE_SHARD_H
#define MDM_CORE_SHARD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/loop.h"

typedef struct mdm_shard mdm_shard_t;
typedef struct mdm_shard_msg mdm_shard_msg_t;
typedef void (*mdm_shard_msg_fn)(mdm_shard_t *shard, mdm_shard_msg_t *msg);

/** A message header, embedded in its payload (recover it with MDM_CONTAINER_OF). */
struct mdm_shard_msg {
    mdm_shard_msg_fn fn;
    mdm_shard_msg_t *next;
};

/** Per-component callbacks, run on each shard's own thread. All optional. */
typedef struct mdm_shard_hooks {
    void (*start)(mdm_shard_t *sh, void *arg);          /* after the ring is up */
    void (*stop_requested)(mdm_shard_t *sh, void *arg); /* stop accepting work */
    bool (*drained)(mdm_shard_t *sh, void *arg);        /* true once nothing is in flight */
    void (*finish)(mdm_shard_t *sh, void *arg);         /* last call before the thread exits */
    void *arg;
} mdm_shard_hooks_t;

#define MDM_SHARD_HOOKS_MAX 8
#define MDM_SHARD_SLOTS 8

struct mdm_shard {
    unsigned index;
    mdm_loop_t loop;
    pthread_t thread;
    int event_fd;
    pthread_mutex_t inbox_lock;
    mdm_shard_msg_t *inbox_head, *inbox_tail;
    mdm_op_t wake_op;
    uint64_t wake_buf;
    atomic_bool stop_asked;
    bool stopping; /* stop hooks have run */
    uint64_t stop_deadline_ms;
    struct mdm_shard_group *group;
    void *slots[MDM_SHARD_SLOTS]; /* per-shard state of components, by slot number */
    uint64_t msgs_handled;
};

enum mdm_shard_slot {
    MDM_SLOT_SERVER_DEVICE,
    MDM_SLOT_SERVER_ADMIN,
    MDM_SLOT_ACTORS,
    MDM_SLOT_APP,
    MDM_SLOT_SERVER_DEVICE_PLAIN,
    MDM_SLOT_APNS,
};

typedef struct mdm_shard_group {
    unsigned n;
    mdm_shard_t *shards;
    mdm_shard_hooks_t hooks[MDM_SHARD_HOOKS_MAX];
    unsigned n_hooks;
    uint64_t drain_timeout_ms;
    atomic_int started;  /* shards whose loop is up */
    atomic_int failed;   /* shards that could not start */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
} mdm_shard_group_t;

/** Prepares n shards (threads not started). Returns 0 or -errno. */
MDM_MUST_CHECK int mdm_shards_init(mdm_shard_group_t *g, unsigned n);

/** Adds component hooks; call before mdm_shards_start. Returns 0 or -ENOSPC. */
int mdm_shards_add_hooks(mdm_shard_group_t *g, const mdm_shard_hooks_t *h);

/** Starts the threads and waits until every ring is up. Returns 0 or the first error. */
MDM_MUST_CHECK int mdm_shards_start(mdm_shard_group_t *g);

/** Asks every shard to stop; drain_timeout_ms bounds how long in-flight work may take. */
void mdm_shards_stop(mdm_shard_group_t *g, uint64_t drain_timeout_ms);

/** Waits for every shard thread to exit. Shard memory stays valid (late posts from storage
 * workers land harmlessly) until mdm_shards_dispose. */
void mdm_shards_join(mdm_shard_group_t *g);

/** Frees the group once nothing can post to it any more (after the store is closed). */
void mdm_shards_dispose(mdm_shard_group_t *g);

/** Hands msg to shard target (any thread may call). Never fails: the inbox is unbounded;
 * senders bound what they send (mailboxes, connection limits). */
void mdm_shard_post(mdm_shard_t *target, mdm_shard_msg_t *msg);

/** The shard running on this thread, or NULL. */
mdm_shard_t *mdm_shard_current(void);

/** Shard owning a key: hash % n (stable for a given n). */
unsigned mdm_shard_for_key(const mdm_shard_group_t *g, const void *key, size_t len);

#endif
