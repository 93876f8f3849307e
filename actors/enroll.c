/*
 * The enrollment service. See enroll.h and docs/enrollment.md.
 */
#include "actors/enroll.h"

#include <errno.h>
#include <stdio.h>

static struct {
    mdm_workers_t *pool;
    char base_url[512];
} E;

int mdm_enroll_run(mdm_worker_fn fn, void *arg)
{
    if (!E.pool)
        return -ESHUTDOWN;
    return mdm_workers_run(E.pool, fn, arg);
}

const char *mdm_enroll_base_url(void) { return E.base_url; }
