/*
 * workers: a FIFO of jobs under one mutex and a condition variable, drained by n threads.
 * Freeing sets `closing`, wakes everyone, and joins once the queue is empty, so every job
 * that was accepted runs.
 */
#include "core/workers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct job {
    mdm_worker_fn fn;
    void *arg;
    struct job *next;
};

struct mdm_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    bool closing;
    unsigned n;
    pthread_t *threads;
    void (*thread_exit)(void);
    char name[16];
};

static void *worker_main(void *arg)
{
    mdm_workers_t *w = arg;
    pthread_setname_np(pthread_self(), w->name);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->closing)
            pthread_cond_wait(&w->cond, &w->lock);
        struct job *j = w->head;
        if (!j)
            break; /* closing and drained */
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    if (w->thread_exit)
        w->thread_exit();
    return NULL;
}

int mdm_workers_new(mdm_workers_t **out, unsigned n, const char *name, void (*thread_exit)(void))
{
    mdm_workers_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->threads = calloc(n ? n : 1, sizeof(*w->threads));
    if (!w->threads) {
        free(w);
        return -ENOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->thread_exit = thread_exit;
    snprintf(w->name, sizeof(w->name), "%s", name);
    /* Workers never take signals: the main thread waits for them with sigwait(). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int ret = 0;
    for (unsigned i = 0; i < n; i++) {
        ret = -pthread_create(&w->threads[i], NULL, worker_main, w);
        if (ret != 0)
            break;
        w->n++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0) {
        mdm_workers_free(w);
        return ret;
    }
    *out = w;
    return 0;
}

int mdm_workers_run(mdm_workers_t *w, mdm_worker_fn fn, void *arg)
{
    struct job *j = malloc(sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->closing) {
        pthread_mutex_unlock(&w->lock);
        free(j);
        return -ESHUTDOWN;
    }
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void mdm_workers_free(mdm_workers_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->closing = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w->threads);
    free(w);
}
