/*
 * loop: one io_uring ring per shard thread, with timers and an end-of-tick hook.
 *
 * Every asynchronous operation is an mdm_op_t embedded in its owner; the SQE's user_data is
 * the op's address. A tick submits what was queued, waits for completions (or the nearest
 * timer), copies every ready CQE into its op, advances the CQ once, and only then runs the
 * callbacks (so a callback may queue new SQEs freely). Timers live in a binary heap. After
 * the callbacks and expired timers of a tick, the tick hooks run (shards use one to hand
 * the tick's writes to storage as one batch).
 *
 * Owning thread: the loop is created, used and disposed by one thread.
 */
#ifndef MDM_CORE_LOOP_H
#define MDM_CORE_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

typedef struct mdm_loop mdm_loop_t;
typedef struct mdm_op mdm_op_t;
typedef struct mdm_timer mdm_timer_t;

typedef void (*mdm_op_cb)(mdm_op_t *op);
typedef void (*mdm_timer_cb)(mdm_timer_t *t);
typedef void (*mdm_tick_hook_cb)(mdm_loop_t *loop, void *arg);

/** An operation in flight. Embedded in its owner; recover the owner with MDM_CONTAINER_OF. */
struct mdm_op {
    mdm_op_cb cb;
    int32_t res;    /* cqe->res: bytes, fd, or -errno */
    uint32_t flags; /* cqe->flags (IORING_CQE_F_BUFFER, ...) */
    bool pending;   /* an SQE for it is queued or in flight; cleared when its completion is
                       collected, which may be before its callback runs in the same tick */
    mdm_op_t *next; /* ready list */
};

struct mdm_timer {
    mdm_timer_cb cb;
    uint64_t deadline_ms; /* loop clock */
    uint32_t heap_index;  /* position + 1 in the heap; 0 = not armed */
};

#define MDM_LOOP_HOOKS_MAX 4

struct mdm_loop {
    struct io_uring ring;
    uint64_t now_ms; /* read once per tick */
    mdm_timer_t **heap;
    uint32_t heap_len, heap_cap;
    mdm_op_t *ready_head, *ready_tail;
    struct {
        mdm_tick_hook_cb cb;
        void *arg;
    } hooks[MDM_LOOP_HOOKS_MAX];
    unsigned n_hooks;
    unsigned setup_flags; /* IORING_SETUP_* actually in use */
    struct io_uring_buf_ring *buf_ring; /* provided receive buffers (group MDM_LOOP_BGID) */
    uint8_t *buf_mem;
    uint32_t buf_count, buf_size;
    uint64_t ticks, completions;
};

/**
 * Sets up the ring with SINGLE_ISSUER and DEFER_TASKRUN when the kernel has them (falling
 * back to plainer setups). Call on the thread that will run the loop.
 * Returns 0 or -errno (-ENOSYS/-EPERM when io_uring is unavailable).
 */
MDM_MUST_CHECK int mdm_loop_init(mdm_loop_t *l, unsigned entries);
void mdm_loop_dispose(mdm_loop_t *l);

/** Buffer group id of the loop's provided receive buffers. */
#define MDM_LOOP_BGID 1

/**
 * Registers count receive buffers of size bytes each (count a power of two) that the kernel
 * picks from for mdm_loop_recv_select(). Returns 0 or -errno.
 */
MDM_MUST_CHECK int mdm_loop_setup_buffers(mdm_loop_t *l, uint32_t count, uint32_t size);

/** The buffer a recv_select completion filled (op->flags carries its id), or NULL. */
uint8_t *mdm_loop_buffer(mdm_loop_t *l, const mdm_op_t *op);

/** Gives the buffer of a recv_select completion back to the kernel. */
void mdm_loop_release_buffer(mdm_loop_t *l, const mdm_op_t *op);

/** Queues ops. The op must stay valid until its callback has run. */
void mdm_loop_accept(mdm_loop_t *l, mdm_op_t *op, int fd);
/** Connects fd to sa; *sa must stay valid until the callback (the kernel may read it late). */
void mdm_loop_connect(mdm_loop_t *l, mdm_op_t *op, int fd, const struct sockaddr *sa,
                      socklen_t len);
void mdm_loop_recv(mdm_loop_t *l, mdm_op_t *op, int fd, void *buf, size_t len);
/** recv into a buffer picked by the kernel from provided-buffer group bgid. */
void mdm_loop_recv_select(mdm_loop_t *l, mdm_op_t *op, int fd, uint16_t bgid, size_t len);
void mdm_loop_send(mdm_loop_t *l, mdm_op_t *op, int fd, const void *buf, size_t len);
void mdm_loop_read(mdm_loop_t *l, mdm_op_t *op, int fd, void *buf, size_t len);
void mdm_loop_close(mdm_loop_t *l, mdm_op_t *op, int fd);
/** Asks the kernel to cancel target (its callback still runs, with -ECANCELED or its result). */
void mdm_loop_cancel(mdm_loop_t *l, mdm_op_t *op, mdm_op_t *target);

void mdm_timer_init(mdm_timer_t *t, mdm_timer_cb cb);
/** (Re)arms t to fire after ms milliseconds of loop time. */
void mdm_timer_arm(mdm_loop_t *l, mdm_timer_t *t, uint64_t ms);
void mdm_timer_disarm(mdm_loop_t *l, mdm_timer_t *t);
static inline bool mdm_timer_armed(const mdm_timer_t *t) { return t->heap_index != 0; }

/** Registers a hook run at the end of every tick. Returns 0 or -ENOSPC. */
int mdm_loop_add_tick_hook(mdm_loop_t *l, mdm_tick_hook_cb cb, void *arg);

/**
 * Runs one tick: submit, wait up to max_wait_ms (less if a timer is due sooner; 0 = poll),
 * run callbacks, timers and hooks. Returns the number of completions handled or -errno.
 */
int mdm_loop_run_once(mdm_loop_t *l, int max_wait_ms);

#endif
