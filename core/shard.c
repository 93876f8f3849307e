/*
 * shard: threads with one io_uring ring each and an MPSC inbox. See shard.h.
 *
 * Inbox invariant: the eventfd is written only by the post that made the inbox non-empty;
 * the shard swaps the whole list out under the lock and runs it with the lock released, so
 * a message posted while the list is being run makes the inbox non-empty again and wakes
 * the ring again.
 */
#include "core/shard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

static _Thread_local mdm_shard_t *current_shard;

mdm_shard_t *mdm_shard_current(void) { return current_shard; }

unsigned mdm_shard_for_key(const mdm_shard_group_t *g, const void *key, size_t len)
{
    return (unsigned)(mdm_hash64(key, len) % g->n);
}

int mdm_shards_init(mdm_shard_group_t *g, unsigned n)
{
    memset(g, 0, sizeof(*g));
    g->n = n;
    g->shards = calloc(n, sizeof(*g->shards));
    if (!g->shards)
        return -ENOMEM;
    pthread_mutex_init(&g->start_lock, NULL);
    pthread_cond_init(&g->start_cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        mdm_shard_t *sh = &g->shards[i];
        sh->index = i;
        sh->group = g;
        sh->event_fd = eventfd(0, EFD_CLOEXEC);
        if (sh->event_fd < 0)
            return -errno;
        pthread_mutex_init(&sh->inbox_lock, NULL);
    }
    return 0;
}

int mdm_shards_add_hooks(mdm_shard_group_t *g, const mdm_shard_hooks_t *h)
{
    if (g->n_hooks == MDM_SHARD_HOOKS_MAX)
        return -ENOSPC;
    g->hooks[g->n_hooks++] = *h;
    return 0;
}

void mdm_shard_post(mdm_shard_t *target, mdm_shard_msg_t *msg)
{
    msg->next = NULL;
    pthread_mutex_lock(&target->inbox_lock);
    bool was_empty = target->inbox_head == NULL;
    if (target->inbox_tail)
        target->inbox_tail->next = msg;
    else
        target->inbox_head = msg;
    target->inbox_tail = msg;
    pthread_mutex_unlock(&target->inbox_lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(target->event_fd, &one, sizeof(one));
        (void)w; /* an eventfd write only fails on counter overflow, which then still wakes */
    }
}

static void drain_inbox(mdm_shard_t *sh)
{
    pthread_mutex_lock(&sh->inbox_lock);
    mdm_shard_msg_t *m = sh->inbox_head;
    sh->inbox_head = sh->inbox_tail = NULL;
    pthread_mutex_unlock(&sh->inbox_lock);
    while (m) {
        mdm_shard_msg_t *next = m->next;
        sh->msgs_handled++;
        m->fn(sh, m); /* may free m */
        m = next;
    }
}

static void on_wake(mdm_op_t *op)
{
    mdm_shard_t *sh = MDM_CONTAINER_OF(op, mdm_shard_t, wake_op);
    drain_inbox(sh);
    mdm_loop_read(&sh->loop, &sh->wake_op, sh->event_fd, &sh->wake_buf, sizeof(sh->wake_buf));
}

static void signal_started(mdm_shard_group_t *g, bool ok)
{
    pthread_mutex_lock(&g->start_lock);
    if (ok)
        atomic_fetch_add(&g->started, 1);
    else
        atomic_fetch_add(&g->failed, 1);
    pthread_cond_broadcast(&g->start_cond);
    pthread_mutex_unlock(&g->start_lock);
}

static bool all_drained(mdm_shard_t *sh)
{
    mdm_shard_group_t *g = sh->group;
    for (unsigned i = 0; i < g->n_hooks; i++)
        if (g->hooks[i].drained && !g->hooks[i].drained(sh, g->hooks[i].arg))
            return false;
    return true;
}

static void *shard_main(void *arg)
{
    mdm_shard_t *sh = arg;
    mdm_shard_group_t *g = sh->group;
    current_shard = sh;
    int ret = mdm_loop_init(&sh->loop, 1024);
    if (ret != 0) {
        mdm_error("shard", "shard %u: io_uring setup failed: %s", sh->index, mdm_strerror(ret));
        signal_started(g, false);
        return NULL;
    }
    sh->wake_op.cb = on_wake;
    mdm_loop_read(&sh->loop, &sh->wake_op, sh->event_fd, &sh->wake_buf, sizeof(sh->wake_buf));
    for (unsigned i = 0; i < g->n_hooks; i++)
        if (g->hooks[i].start)
            g->hooks[i].start(sh, g->hooks[i].arg);
    signal_started(g, true);

    for (;;) {
        ret = mdm_loop_run_once(&sh->loop, sh->stopping ? 50 : 1000);
        if (ret < 0) {
            mdm_error("shard", "shard %u: loop failed: %s", sh->index, mdm_strerror(ret));
            break;
        }
        if (!atomic_load(&sh->stop_asked))
            continue;
        if (!sh->stopping) {
            sh->stopping = true;
            sh->stop_deadline_ms = sh->loop.now_ms + g->drain_timeout_ms;
            for (unsigned i = 0; i < g->n_hooks; i++)
                if (g->hooks[i].stop_requested)
                    g->hooks[i].stop_requested(sh, g->hooks[i].arg);
        }
        if (all_drained(sh))
            break;
        if (sh->loop.now_ms >= sh->stop_deadline_ms) {
            mdm_warn("shard", "shard %u: drain timeout, closing with work in flight", sh->index);
            break;
        }
    }
    drain_inbox(sh);
    for (unsigned i = 0; i < g->n_hooks; i++)
        if (g->hooks[i].finish)
            g->hooks[i].finish(sh, g->hooks[i].arg);
    mdm_loop_dispose(&sh->loop);
    current_shard = NULL;
    return NULL;
}

int mdm_shards_start(mdm_shard_group_t *g)
{
    for (unsigned i = 0; i < g->n; i++) {
        int ret = pthread_create(&g->shards[i].thread, NULL, shard_main, &g->shards[i]);
        if (ret != 0)
            return -ret;
    }
    pthread_mutex_lock(&g->start_lock);
    while (atomic_load(&g->started) + atomic_load(&g->failed) < (int)g->n)
        pthread_cond_wait(&g->start_cond, &g->start_lock);
    pthread_mutex_unlock(&g->start_lock);
    return atomic_load(&g->failed) ? -ENOSYS : 0;
}

/* A no-op message: its only purpose is to wake a shard blocked in its ring. */
static void on_nudge(mdm_shard_t *sh, mdm_shard_msg_t *msg)
{
    (void)sh;
    free(msg);
}

void mdm_shards_stop(mdm_shard_group_t *g, uint64_t drain_timeout_ms)
{
    g->drain_timeout_ms = drain_timeout_ms;
    for (unsigned i = 0; i < g->n; i++) {
        atomic_store(&g->shards[i].stop_asked, true);
        mdm_shard_msg_t *nudge = calloc(1, sizeof(*nudge));
        if (nudge) {
            nudge->fn = on_nudge;
            mdm_shard_post(&g->shards[i], nudge);
        }
    }
}

void mdm_shards_join(mdm_shard_group_t *g)
{
    for (unsigned i = 0; i < g->n; i++)
        pthread_join(g->shards[i].thread, NULL);
}

void mdm_shards_dispose(mdm_shard_group_t *g)
{
    for (unsigned i = 0; g->shards && i < g->n; i++) {
        mdm_shard_t *sh = &g->shards[i];
        for (mdm_shard_msg_t *m = sh->inbox_head, *next; m; m = next) {
            next = m->next;
            mdm_warn("shard", "shard %u: message left in inbox after stop", i);
        }
        close(sh->event_fd);
        pthread_mutex_destroy(&sh->inbox_lock);
    }
    free(g->shards);
    g->shards = NULL;
    pthread_mutex_destroy(&g->start_lock);
    pthread_cond_destroy(&g->start_cond);
}
