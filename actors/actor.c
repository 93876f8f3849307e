/*
 * Actor runtime and per-shard group commit. See actor.h.
 *
 * Per shard: a chained hash table of actors, an LRU list (most recent at the head), and a
 * commit group with two batches: `open` fills during the tick, `inflight` is being made
 * durable by a storage worker. Only one commit per shard is in flight, so a shard's commits
 * are durable in the order they were made; the waiters of a batch run after it is durable.
 *
 * Owning thread: everything in struct actor_shard belongs to its shard's thread; the storage
 * worker only posts the embedded commit message back.
 */
#include "actors/actor.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct commit_group {
    mdm_batch_t *open, *inflight;
    mdm_commit_waiter_t *open_waiters, *open_waiters_tail;
    mdm_commit_waiter_t *inflight_waiters;
    uint64_t open_epoch;    /* epoch of the open batch; starts at 1 */
    uint64_t durable_epoch; /* last epoch whose commit finished */
    bool in_flight;
    int inflight_status;
    mdm_shard_msg_t done_msg; /* posted by the storage worker when the commit is durable */
};

struct actor_shard {
    mdm_actors_t *rt;
    mdm_shard_t *shard;
    mdm_actor_t **table;
    size_t table_size; /* power of two */
    size_t count;
    mdm_actor_t *lru_head, *lru_tail;
    struct commit_group cg;
    struct mdm_actors_stats stats;
};

struct mdm_actors {
    struct mdm_actors_options opts;
    mdm_shard_group_t *group;
    struct actor_shard *per_shard;
};

static void deliver(struct actor_shard *as, mdm_actor_msg_t *m);
static void flush_commit(struct actor_shard *as);

static struct actor_shard *shard_state(mdm_shard_t *sh)
{
    struct actor_shard *as = sh->slots[MDM_SLOT_ACTORS];
    assert(as);
    return as;
}

static uint64_t actor_hash(const mdm_actor_type_t *type, const char *id)
{
    char key[MDM_ACTOR_ID_MAX + 64];
    int n = snprintf(key, sizeof(key), "%s:%s", type->name, id);
    return mdm_hash64(key, (size_t)n < sizeof(key) ? (size_t)n : sizeof(key) - 1);
}

unsigned mdm_actor_home(const mdm_actors_t *rt, const mdm_actor_type_t *type, const char *id)
{
    return (unsigned)(actor_hash(type, id) % rt->group->n);
}

mdm_actors_t *mdm_actors_of(const mdm_actor_t *a) { return a->_home->rt; }
mdm_store_t *mdm_actors_store(const mdm_actors_t *rt) { return rt->opts.store; }
mdm_shard_t *mdm_actor_shard(const mdm_actor_t *a) { return a->_home->shard; }

/* ---- table and LRU ---- */

static void lru_unlink(struct actor_shard *as, mdm_actor_t *a)
{
    if (a->_lru_prev)
        a->_lru_prev->_lru_next = a->_lru_next;
    else
        as->lru_head = a->_lru_next;
    if (a->_lru_next)
        a->_lru_next->_lru_prev = a->_lru_prev;
    else
        as->lru_tail = a->_lru_prev;
    a->_lru_prev = a->_lru_next = NULL;
}

static void lru_touch(struct actor_shard *as, mdm_actor_t *a)
{
    if (as->lru_head == a)
        return;
    if (a->_lru_prev || a->_lru_next || as->lru_tail == a)
        lru_unlink(as, a);
    a->_lru_next = as->lru_head;
    if (as->lru_head)
        as->lru_head->_lru_prev = a;
    as->lru_head = a;
    if (!as->lru_tail)
        as->lru_tail = a;
}

static int table_grow(struct actor_shard *as)
{
    size_t size = as->table_size ? as->table_size * 2 : 1024;
    mdm_actor_t **t = calloc(size, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < as->table_size; i++) {
        for (mdm_actor_t *a = as->table[i], *next; a; a = next) {
            next = a->_chain;
            size_t b = a->hash & (size - 1);
            a->_chain = t[b];
            t[b] = a;
        }
    }
    free(as->table);
    as->table = t;
    as->table_size = size;
    return 0;
}

static mdm_actor_t *table_find(struct actor_shard *as, const mdm_actor_type_t *type,
                               const char *id, uint64_t hash)
{
    if (!as->table_size)
        return NULL;
    for (mdm_actor_t *a = as->table[hash & (as->table_size - 1)]; a; a = a->_chain)
        if (a->hash == hash && a->type == type && strcmp(a->id, id) == 0)
            return a;
    return NULL;
}

static void table_remove(struct actor_shard *as, mdm_actor_t *a)
{
    mdm_actor_t **pp = &as->table[a->hash & (as->table_size - 1)];
    while (*pp != a)
        pp = &(*pp)->_chain;
    *pp = a->_chain;
    as->count--;
}

static void actor_free(struct actor_shard *as, mdm_actor_t *a)
{
    table_remove(as, a);
    lru_unlink(as, a);
    if (a->type->evict)
        a->type->evict(a);
    free(a);
}

static bool actor_idle(const mdm_actor_t *a)
{
    return !a->_loading && !a->_busy && a->_mbox_len == 0 &&
           a->_written_epoch <= a->_home->cg.durable_epoch;
}

/* Evicts least recently used idle actors while the shard holds more than its limit. */
static void evict_excess(struct actor_shard *as)
{
    mdm_actor_t *a = as->lru_tail;
    while (as->count > as->rt->opts.max_in_memory && a) {
        mdm_actor_t *prev = a->_lru_prev;
        if (actor_idle(a)) {
            actor_free(as, a);
            as->stats.evicted++;
        }
        a = prev;
    }
}

/* ---- mailbox ---- */

static void run_next(mdm_actor_t *a)
{
    if (a->_loading || a->_busy || !a->_mbox_head)
        return;
    mdm_actor_msg_t *m = a->_mbox_head;
    a->_mbox_head = m->next;
    if (!a->_mbox_head)
        a->_mbox_tail = NULL;
    a->_mbox_len--;
    a->_busy = true;
    a->_home->stats.messages++;
    a->type->receive(a, m);
}

static void reject_all(mdm_actor_t *a, int err)
{
    while (a->_mbox_head) {
        mdm_actor_msg_t *m = a->_mbox_head;
        a->_mbox_head = m->next;
        a->_mbox_len--;
        a->_home->stats.rejected++;
        m->on_reject(m, err);
    }
    a->_mbox_tail = NULL;
}

void mdm_actor_loaded(mdm_actor_t *a, int status)
{
    struct actor_shard *as = a->_home;
    a->_loading = false;
    if (status != 0) {
        mdm_warn("actor", "%s %s: load failed: %s", a->type->name, a->id, mdm_strerror(status));
        reject_all(a, status);
        actor_free(as, a);
        return;
    }
    as->stats.loaded++;
    run_next(a);
}

void mdm_actor_done(mdm_actor_t *a)
{
    assert(a->_busy);
    a->_busy = false;
    run_next(a);
    if (actor_idle(a))
        evict_excess(a->_home);
}

static void deliver(struct actor_shard *as, mdm_actor_msg_t *m)
{
    uint64_t hash = actor_hash(m->type, m->id);
    mdm_actor_t *a = table_find(as, m->type, m->id, hash);
    bool created = false;
    if (!a) {
        if (as->count + 1 > as->table_size * 2 && table_grow(as) != 0) {
            as->stats.rejected++;
            m->on_reject(m, -ENOMEM);
            return;
        }
        a = calloc(1, m->type->size);
        if (!a) {
            as->stats.rejected++;
            m->on_reject(m, -ENOMEM);
            return;
        }
        a->type = m->type;
        snprintf(a->id, sizeof(a->id), "%s", m->id);
        a->hash = hash;
        a->_home = as;
        size_t b = hash & (as->table_size - 1);
        a->_chain = as->table[b];
        as->table[b] = a;
        as->count++;
        as->stats.actors++;
        a->_loading = true;
        created = true;
    }
    lru_touch(as, a);
    if (a->_mbox_len >= as->rt->opts.mailbox_size) {
        as->stats.rejected++;
        m->on_reject(m, MDM_EFULL);
        return;
    }
    m->next = NULL;
    if (a->_mbox_tail)
        a->_mbox_tail->next = m;
    else
        a->_mbox_head = m;
    a->_mbox_tail = m;
    a->_mbox_len++;
    if (created) {
        a->type->load(a); /* may call mdm_actor_loaded (and so run the message) at once */
        return;
    }
    run_next(a);
}

static void on_remote_message(mdm_shard_t *sh, mdm_shard_msg_t *sm)
{
    mdm_actor_msg_t *m = MDM_CONTAINER_OF(sm, mdm_actor_msg_t, shard_msg);
    deliver(shard_state(sh), m);
}

void mdm_actor_send(mdm_actors_t *rt, mdm_actor_msg_t *m)
{
    mdm_shard_t *here = mdm_shard_current();
    m->origin = here;
    unsigned home = mdm_actor_home(rt, m->type, m->id);
    if (here && here->index == home && here->group == rt->group) {
        deliver(shard_state(here), m);
        return;
    }
    m->shard_msg.fn = on_remote_message;
    mdm_shard_post(&rt->group->shards[home], &m->shard_msg);
}

void mdm_actor_reply(mdm_actor_msg_t *m, mdm_shard_msg_fn fn)
{
    mdm_shard_t *here = mdm_shard_current();
    if (here == m->origin) {
        fn(here, &m->shard_msg);
        return;
    }
    m->shard_msg.fn = fn;
    mdm_shard_post(m->origin, &m->shard_msg);
}

/* ---- group commit ---- */

mdm_batch_t *mdm_actor_batch(mdm_actor_t *a)
{
    a->_written_epoch = a->_home->cg.open_epoch;
    return a->_home->cg.open;
}

mdm_batch_t *mdm_actors_shard_batch(mdm_shard_t *sh) { return shard_state(sh)->cg.open; }

void mdm_actors_after_commit(mdm_shard_t *sh, mdm_commit_waiter_t *w)
{
    struct commit_group *cg = &shard_state(sh)->cg;
    w->next = NULL;
    if (cg->open_waiters_tail)
        cg->open_waiters_tail->next = w;
    else
        cg->open_waiters = w;
    cg->open_waiters_tail = w;
}

static void run_waiters(mdm_commit_waiter_t *w, int status)
{
    while (w) {
        mdm_commit_waiter_t *next = w->next; /* fn may free w */
        w->fn(w, status);
        w = next;
    }
}

/* Runs on the shard: the in-flight batch is durable (or failed). */
static void on_commit_done_msg(mdm_shard_t *sh, mdm_shard_msg_t *msg)
{
    (void)msg;
    struct actor_shard *as = shard_state(sh);
    struct commit_group *cg = &as->cg;
    int status = cg->inflight_status;
    if (status != 0) {
        /* The actors already changed their state in memory for writes that are not on disk,
         * and a failed fsync may have lost earlier ones too: no reply can be trusted any
         * more. Stop, so that a restart reloads every actor from what is durable. */
        mdm_error("actor", "shard %u: group commit failed: %s; stopping so that state is "
                           "reloaded from disk", sh->index, mdm_strerror(status));
        abort();
    } else {
        as->stats.commits++;
        as->stats.committed_records += mdm_batch_count(cg->inflight);
    }
    mdm_batch_clear(cg->inflight);
    cg->durable_epoch = cg->open_epoch - 1;
    mdm_commit_waiter_t *w = cg->inflight_waiters;
    cg->inflight_waiters = NULL;
    cg->in_flight = false;
    run_waiters(w, status);
    evict_excess(as); /* actors that waited for this commit may go now */
    flush_commit(as); /* what piled up meanwhile goes at once */
}

/* Runs on a storage worker thread. */
static void on_commit_done(void *arg, int status)
{
    struct actor_shard *as = arg;
    as->cg.inflight_status = status;
    as->cg.done_msg.fn = on_commit_done_msg;
    mdm_shard_post(as->shard, &as->cg.done_msg);
}

static void flush_commit(struct actor_shard *as)
{
    struct commit_group *cg = &as->cg;
    if (cg->in_flight)
        return;
    if (mdm_batch_count(cg->open) == 0) {
        /* Nothing new to write and nothing in flight: everything they wait for is durable. */
        mdm_commit_waiter_t *w = cg->open_waiters;
        cg->open_waiters = cg->open_waiters_tail = NULL;
        run_waiters(w, 0);
        return;
    }
    mdm_batch_t *b = cg->open;
    cg->open = cg->inflight;
    cg->inflight = b;
    cg->inflight_waiters = cg->open_waiters;
    cg->open_waiters = cg->open_waiters_tail = NULL;
    cg->in_flight = true;
    cg->open_epoch++;
    int ret = mdm_store_commit_async(as->rt->opts.store, b, on_commit_done, as);
    if (ret != 0) {
        cg->inflight_status = ret;
        on_commit_done_msg(as->shard, &cg->done_msg);
    }
}

static void on_tick(mdm_loop_t *loop, void *arg)
{
    (void)loop;
    flush_commit(arg);
}

void mdm_actors_shard_stats(mdm_shard_t *sh, struct mdm_actors_stats *st)
{
    *st = shard_state(sh)->stats;
}

/* ---- shard hooks ---- */

static void on_shard_start(mdm_shard_t *sh, void *arg)
{
    mdm_actors_t *rt = arg;
    struct actor_shard *as = &rt->per_shard[sh->index];
    as->rt = rt;
    as->shard = sh;
    as->cg.open_epoch = 1;
    as->cg.open = mdm_batch_new();
    as->cg.inflight = mdm_batch_new();
    if (!as->cg.open || !as->cg.inflight || table_grow(as) != 0 ||
        mdm_loop_add_tick_hook(&sh->loop, on_tick, as) != 0) {
        mdm_error("actor", "shard %u: out of memory at start", sh->index);
        abort(); /* start-up only */
    }
    sh->slots[MDM_SLOT_ACTORS] = as;
}

/* True while some actor is loading, handling a message or has mail: storage workers and
 * other shards may still hand work back to it. Walks the table: shutdown only. */
static bool actors_active(const struct actor_shard *as)
{
    for (size_t i = 0; i < as->table_size; i++)
        for (const mdm_actor_t *a = as->table[i]; a; a = a->_chain)
            if (a->_loading || a->_busy || a->_mbox_len)
                return true;
    return false;
}

static bool on_shard_drained(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct actor_shard *as = shard_state(sh);
    return !as->cg.in_flight && mdm_batch_count(as->cg.open) == 0 && !as->cg.open_waiters &&
           !actors_active(as);
}

static void on_shard_finish(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct actor_shard *as = shard_state(sh);
    for (size_t i = 0; i < as->table_size; i++) {
        for (mdm_actor_t *a = as->table[i], *next; a; a = next) {
            next = a->_chain;
            reject_all(a, -ESHUTDOWN);
            if (a->type->evict)
                a->type->evict(a);
            free(a);
        }
    }
    free(as->table);
    as->table = NULL;
    as->count = 0;
    if (as->cg.in_flight)
        mdm_warn("actor", "shard %u: stopping with a commit in flight", sh->index);
    else {
        mdm_batch_free(as->cg.inflight);
        mdm_batch_free(as->cg.open);
    }
    sh->slots[MDM_SLOT_ACTORS] = NULL;
}

int mdm_actors_new(mdm_actors_t **out, mdm_shard_group_t *g, const struct mdm_actors_options *o)
{
    mdm_actors_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    rt->opts = *o;
    rt->group = g;
    rt->per_shard = calloc(g->n, sizeof(*rt->per_shard));
    if (!rt->per_shard) {
        free(rt);
        return -ENOMEM;
    }
    mdm_shard_hooks_t h = {
        .start = on_shard_start,
        .drained = on_shard_drained,
        .finish = on_shard_finish,
        .arg = rt,
    };
    int ret = mdm_shards_add_hooks(g, &h);
    if (ret != 0) {
        mdm_actors_free(rt);
        return ret;
    }
    *out = rt;
    return 0;
}

void mdm_actors_free(mdm_actors_t *rt)
{
    if (!rt)
        return;
    free(rt->per_shard);
    free(rt);
}
