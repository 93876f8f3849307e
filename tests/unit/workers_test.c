/* workers: every accepted job runs exactly once, on a worker thread; free drains the queue;
 * the thread-exit hook runs on each worker. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "check.h"
#include "core/workers.h"

#define JOBS 20000

static atomic_int ran, on_main, exits;
static pthread_t main_thread;
static atomic_int counts[JOBS];

static void job(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&counts[i], 1);
    atomic_fetch_add(&ran, 1);
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&on_main, 1);
}

static void slow_job(void *arg)
{
    usleep(1000);
    job(arg);
}

static void on_exit_hook(void) { atomic_fetch_add(&exits, 1); }

int main(void)
{
    main_thread = pthread_self();
    mdm_workers_t *w = NULL;
    CHECK_EQ_INT(mdm_workers_new(&w, 3, "test-work", on_exit_hook), 0);
    for (int i = 0; i < JOBS - 50; i++)
        CHECK_EQ_INT(mdm_workers_run(w, job, (void *)(intptr_t)i), 0);
    /* Slow jobs still queued when freeing starts must run too. */
    for (int i = JOBS - 50; i < JOBS; i++)
        CHECK_EQ_INT(mdm_workers_run(w, slow_job, (void *)(intptr_t)i), 0);
    mdm_workers_free(w);
    CHECK_EQ_INT(atomic_load(&ran), JOBS);
    CHECK_EQ_INT(atomic_load(&on_main), 0);
    CHECK_EQ_INT(atomic_load(&exits), 3);
    int once = 0;
    for (int i = 0; i < JOBS; i++)
        once += atomic_load(&counts[i]) == 1;
    CHECK_EQ_INT(once, JOBS);
    mdm_workers_free(NULL);
    return check_finish("workers");
}
