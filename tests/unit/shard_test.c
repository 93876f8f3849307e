/* shards: messages from many threads reach the right shard, in order per sender; stop
 * waits for the drain hook. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/shard.h"

#define SENDERS 4
#define PER_SENDER 20000

struct msg {
    mdm_shard_msg_t m;
    int sender, seq;
};

static int last_seq[2][SENDERS];
static atomic_int received[2];
static atomic_int out_of_order;
static atomic_int wrong_thread;
static atomic_int started, finished;
static bool drain_ok[2];

static void on_msg(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    struct msg *msg = MDM_CONTAINER_OF(m, struct msg, m);
    if (mdm_shard_current() != sh)
        atomic_fetch_add(&wrong_thread, 1);
    if (msg->seq != last_seq[sh->index][msg->sender] + 1)
        atomic_fetch_add(&out_of_order, 1);
    last_seq[sh->index][msg->sender] = msg->seq;
    atomic_fetch_add(&received[sh->index], 1);
    free(msg);
}

static mdm_shard_group_t group;

static void *sender(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 1; i <= PER_SENDER; i++) {
        for (unsigned s = 0; s < 2; s++) {
            struct msg *m = calloc(1, sizeof(*m));
            m->m.fn = on_msg;
            m->sender = id;
            m->seq = i;
            mdm_shard_post(&group.shards[s], &m->m);
        }
    }
    return NULL;
}

static void on_start(mdm_shard_t *sh, void *arg)
{
    (void)sh;
    (void)arg;
    atomic_fetch_add(&started, 1);
}

/* Drained only once every message has arrived: stop must wait for that. */
static bool on_drained(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    drain_ok[sh->index] = atomic_load(&received[sh->index]) == SENDERS * PER_SENDER;
    return drain_ok[sh->index];
}

static void on_finish(mdm_shard_t *sh, void *arg)
{
    (void)sh;
    (void)arg;
    atomic_fetch_add(&finished, 1);
}

int main(void)
{
    CHECK_EQ_INT(mdm_shards_init(&group, 2), 0);
    mdm_shard_hooks_t h = {.start = on_start, .drained = on_drained, .finish = on_finish};
    CHECK_EQ_INT(mdm_shards_add_hooks(&group, &h), 0);
    int ret = mdm_shards_start(&group);
    if (ret == -ENOSYS) {
        mdm_shards_stop(&group, 0);
        mdm_shards_join(&group);
        mdm_shards_dispose(&group);
        return 77;
    }
    CHECK_EQ_INT(ret, 0);
    CHECK_EQ_INT(atomic_load(&started), 2);
    pthread_t th[SENDERS];
    for (int i = 0; i < SENDERS; i++)
        pthread_create(&th[i], NULL, sender, (void *)(intptr_t)i);
    /* Stop while senders are still posting: shards keep going until drained. */
    mdm_shards_stop(&group, 60000);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    mdm_shards_join(&group);
    CHECK_EQ_INT(atomic_load(&received[0]), SENDERS * PER_SENDER);
    CHECK_EQ_INT(atomic_load(&received[1]), SENDERS * PER_SENDER);
    CHECK_EQ_INT(atomic_load(&out_of_order), 0);
    CHECK_EQ_INT(atomic_load(&wrong_thread), 0);
    CHECK(drain_ok[0] && drain_ok[1]);
    CHECK_EQ_INT(atomic_load(&finished), 2);
    /* Placement is stable and spreads keys. */
    int on0 = 0;
    for (int i = 0; i < 1000; i++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "dev%d", i);
        unsigned s = mdm_shard_for_key(&group, key, (size_t)n);
        CHECK(s == mdm_shard_for_key(&group, key, (size_t)n));
        on0 += s == 0;
    }
    CHECK(on0 > 400 && on0 < 600);
    mdm_shards_dispose(&group);
    return check_finish("shard");
}
