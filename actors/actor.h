/*
 * Actor runtime: per-shard actor tables, bounded mailboxes, lazy loading, eviction, and the
 * shard's group commit.
 *
 * An actor is identified by (type, id) and lives on its home shard, hash(type:id) % shards.
 * mdm_actor_send() from any shard routes a message there; the actor is created and loaded
 * on first use, handles one message at a time (a handler may finish later, e.g. after its
 * writes are durable) and is evicted when idle and the shard holds more than its limit.
 *
 * Group commit: handlers append writes to the shard's open batch (mdm_actor_batch) and ask
 * to be called back once it is durable (mdm_actors_after_commit). At the end of each loop
 * tick the open batch goes to a storage worker as one commit; while it is in flight the next
 * batch fills, so batch size follows load with no timer delay.
 */
#ifndef MDM_ACTORS_ACTOR_H
#define MDM_ACTORS_ACTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/shard.h"
#include "storage/store.h"

#define MDM_ACTOR_ID_MAX 128

typedef struct mdm_actor mdm_actor_t;
typedef struct mdm_actor_msg mdm_actor_msg_t;
typedef struct mdm_actors mdm_actors_t;
typedef struct mdm_commit_waiter mdm_commit_waiter_t;

typedef struct mdm_actor_type {
    const char *name;
    size_t size; /* bytes of the concrete actor struct; mdm_actor_t is its first member */
    /** Starts loading state; calls mdm_actor_loaded(a, status) now or later. */
    void (*load)(mdm_actor_t *a);
    /** Handles one message; calls mdm_actor_done(a) now or later. */
    void (*receive)(mdm_actor_t *a, mdm_actor_msg_t *m);
    /** Frees what the actor owns (not the actor itself). May be NULL. */
    void (*evict)(mdm_actor_t *a);
} mdm_actor_type_t;

/**
 * A message. Embedded first in the sender's payload; the sender fills type, id, kind and
 * on_reject, and hands the message over with mdm_actor_send. Whoever holds it last frees it.
 */
struct mdm_actor_msg {
    mdm_shard_msg_t shard_msg; /* used for crossing shards (and replying) */
    const mdm_actor_type_t *type;
    char id[MDM_ACTOR_ID_MAX];
    int kind;                 /* message type, meaning defined by the actor type */
    mdm_shard_t *origin;      /* shard that sent it (set by mdm_actor_send) */
    /** Called on the home shard instead of receive when the message cannot be delivered
     * (MDM_EFULL: mailbox full; MDM_ESTORE: the actor failed to load; -ESHUTDOWN). */
    void (*on_reject)(mdm_actor_msg_t *m, int err);
    mdm_actor_msg_t *next;    /* mailbox link */
};

struct mdm_actor {
    const mdm_actor_type_t *type;
    char id[MDM_ACTOR_ID_MAX];
    uint64_t hash;
    struct actor_shard *_home;
    mdm_actor_msg_t *_mbox_head, *_mbox_tail;
    unsigned _mbox_len;
    bool _loading;
    bool _busy; /* a message is being handled */
    uint64_t _written_epoch; /* commit epoch of its last write; not evictable before durable */
    mdm_actor_t *_chain;             /* hash table chain */
    mdm_actor_t *_lru_prev, *_lru_next;
};

/** Called back on the shard when a group commit finished. Embed it; status 0 = durable. */
struct mdm_commit_waiter {
    void (*fn)(mdm_commit_waiter_t *w, int status);
    mdm_commit_waiter_t *next;
};

struct mdm_actors_options {
    mdm_store_t *store;        /* borrowed */
    unsigned max_in_memory;    /* actors per shard before idle ones are evicted */
    unsigned mailbox_size;     /* messages waiting per actor */
};

/** Creates the runtime for a shard group and registers its shard hooks. Returns 0 or -errno. */
MDM_MUST_CHECK int mdm_actors_new(mdm_actors_t **out, mdm_shard_group_t *g,
                                  const struct mdm_actors_options *o);
void mdm_actors_free(mdm_actors_t *rt);

/** Sends m to its actor's home shard (from any shard thread). */
void mdm_actor_send(mdm_actors_t *rt, mdm_actor_msg_t *m);

/** The home shard index of (type, id). */
unsigned mdm_actor_home(const mdm_actors_t *rt, const mdm_actor_type_t *type, const char *id);

/** Ends loading (status 0) or fails it: queued messages are then rejected. */
void mdm_actor_loaded(mdm_actor_t *a, int status);

/** Ends the handling of the current message; the next one is taken. */
void mdm_actor_done(mdm_actor_t *a);

/** Sends m back to its origin shard, running fn there (m->shard_msg is reused). */
void mdm_actor_reply(mdm_actor_msg_t *m, mdm_shard_msg_fn fn);

/** The runtime of the calling shard's actors. */
mdm_actors_t *mdm_actors_of(const mdm_actor_t *a);
mdm_store_t *mdm_actors_store(const mdm_actors_t *rt);
mdm_shard_t *mdm_actor_shard(const mdm_actor_t *a);

/**
 * The open batch of the actor's shard, for the actor's writes: they are committed at the end
 * of the tick. The actor stays in memory until they are durable (so a reload never reads
 * state older than what it already acknowledged).
 */
mdm_batch_t *mdm_actor_batch(mdm_actor_t *a);

/**
 * The open batch of shard sh, for writers that are not actors (the admin API's command records
 * and audit events). Committed at the end of the tick like actors' writes; pair it with
 * mdm_actors_after_commit to learn when they are durable. Borrowed; only on sh's thread.
 */
mdm_batch_t *mdm_actors_shard_batch(mdm_shard_t *sh);

/** Calls w->fn on this shard once everything appended so far to the shard's batch is durable. */
void mdm_actors_after_commit(mdm_shard_t *sh, mdm_commit_waiter_t *w);

/** Counters of one shard (for /readyz and tests). */
struct mdm_actors_stats {
    uint64_t actors, loaded, evicted, messages, rejected, commits, committed_records;
};
void mdm_actors_shard_stats(mdm_shard_t *sh, struct mdm_actors_stats *st);

#endif
