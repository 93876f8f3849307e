/*
 * loop: io_uring event loop with a timer heap. See loop.h.
 *
 * Design: ops are caller-owned and embedded; user_data is the op pointer. A tick never runs
 * a callback while walking the CQ: completions are first copied to a ready list, the CQ is
 * advanced in one step, then callbacks run. Getting an SQE when the SQ is full submits
 * first. Timers: a min-heap of embedded mdm_timer_t keyed by deadline; the wait of a tick
 * is bounded by the earliest deadline.
 *
 * Owning thread: exactly one (the shard's).
 */
#include "core/loop.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int mdm_loop_init(mdm_loop_t *l, unsigned entries)
{
    memset(l, 0, sizeof(*l));
    /* Best first: one issuer with task work run only when we wait (the cheapest mode
     * measured here), then cooperative task run, then plain. */
    static const unsigned attempts[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -ENOSYS;
    for (size_t i = 0; i < MDM_ARRAY_LEN(attempts); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = attempts[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        ret = io_uring_queue_init_params(entries, &l->ring, &p);
        if (ret == 0) {
            l->setup_flags = attempts[i];
            break;
        }
        if (ret != -EINVAL)
            break;
    }
    if (ret != 0)
        return ret;
    l->heap_cap = 1024;
    l->heap = calloc(l->heap_cap, sizeof(*l->heap));
    if (!l->heap) {
        io_uring_queue_exit(&l->ring);
        return -ENOMEM;
    }
    l->now_ms = mdm_now_ms();
    return 0;
}

void mdm_loop_dispose(mdm_loop_t *l)
{
    if (l->buf_ring)
        io_uring_unregister_buf_ring(&l->ring, MDM_LOOP_BGID);
    io_uring_queue_exit(&l->ring);
    free(l->heap);
    free(l->buf_ring);
    free(l->buf_mem);
    l->heap = NULL;
    l->buf_ring = NULL;
    l->buf_mem = NULL;
}

int mdm_loop_setup_buffers(mdm_loop_t *l, uint32_t count, uint32_t size)
{
    assert(count && (count & (count - 1)) == 0 && count <= 32768);
    void *ring_mem = NULL;
    if (posix_memalign(&ring_mem, 4096, count * sizeof(struct io_uring_buf)) != 0)
        return -ENOMEM;
    l->buf_mem = malloc((size_t)count * size);
    if (!l->buf_mem) {
        free(ring_mem);
        return -ENOMEM;
    }
    l->buf_ring = ring_mem;
    l->buf_count = count;
    l->buf_size = size;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)ring_mem;
    reg.ring_entries = count;
    reg.bgid = MDM_LOOP_BGID;
    int ret = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (ret != 0) {
        free(l->buf_ring);
        free(l->buf_mem);
        l->buf_ring = NULL;
        l->buf_mem = NULL;
        return ret;
    }
    io_uring_buf_ring_init(l->buf_ring);
    int mask = io_uring_buf_ring_mask(count);
    for (uint32_t i = 0; i < count; i++)
        io_uring_buf_ring_add(l->buf_ring, l->buf_mem + (size_t)i * size, size, (unsigned short)i,
                              mask, (int)i);
    io_uring_buf_ring_advance(l->buf_ring, (int)count);
    return 0;
}

uint8_t *mdm_loop_buffer(mdm_loop_t *l, const mdm_op_t *op)
{
    if (!(op->flags & IORING_CQE_F_BUFFER))
        return NULL;
    uint32_t bid = op->flags >> IORING_CQE_BUFFER_SHIFT;
    assert(bid < l->buf_count);
    return l->buf_mem + (size_t)bid * l->buf_size;
}

void mdm_loop_release_buffer(mdm_loop_t *l, const mdm_op_t *op)
{
    if (!(op->flags & IORING_CQE_F_BUFFER))
        return;
    uint32_t bid = op->flags >> IORING_CQE_BUFFER_SHIFT;
    io_uring_buf_ring_add(l->buf_ring, l->buf_mem + (size_t)bid * l->buf_size, l->buf_size,
                          (unsigned short)bid, io_uring_buf_ring_mask(l->buf_count), 0);
    io_uring_buf_ring_advance(l->buf_ring, 1);
}

static struct io_uring_sqe *get_sqe(mdm_loop_t *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    while (!sqe) {
        /* SQ full: push what is queued to the kernel and try again. */
        int ret = io_uring_submit(&l->ring);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            mdm_error("loop", "io_uring_submit: %s", mdm_strerror(ret));
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

static void queue(mdm_op_t *op, struct io_uring_sqe *sqe)
{
    op->pending = true;
    op->res = 0;
    op->flags = 0;
    io_uring_sqe_set_data(sqe, op);
}

void mdm_loop_accept(mdm_loop_t *l, mdm_op_t *op, int fd)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    queue(op, sqe);
}

void mdm_loop_connect(mdm_loop_t *l, mdm_op_t *op, int fd, const struct sockaddr *sa,
                      socklen_t len)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_connect(sqe, fd, sa, len);
    queue(op, sqe);
}

void mdm_loop_recv(mdm_loop_t *l, mdm_op_t *op, int fd, void *buf, size_t len)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_recv(sqe, fd, buf, len, 0);
    queue(op, sqe);
}

void mdm_loop_recv_select(mdm_loop_t *l, mdm_op_t *op, int fd, uint16_t bgid, size_t len)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_recv(sqe, fd, NULL, len, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    queue(op, sqe);
}

void mdm_loop_send(mdm_loop_t *l, mdm_op_t *op, int fd, const void *buf, size_t len)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    queue(op, sqe);
}

void mdm_loop_read(mdm_loop_t *l, mdm_op_t *op, int fd, void *buf, size_t len)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
    queue(op, sqe);
}

void mdm_loop_close(mdm_loop_t *l, mdm_op_t *op, int fd)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_close(sqe, fd);
    queue(op, sqe);
}

void mdm_loop_cancel(mdm_loop_t *l, mdm_op_t *op, mdm_op_t *target)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_cancel(sqe, target, 0);
    queue(op, sqe);
}

/* ---- timers: binary min-heap on deadline_ms; heap_index is position + 1 ---- */

static void heap_set(mdm_loop_t *l, uint32_t i, mdm_timer_t *t)
{
    l->heap[i] = t;
    t->heap_index = i + 1;
}

static void heap_up(mdm_loop_t *l, uint32_t i)
{
    mdm_timer_t *t = l->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline_ms <= t->deadline_ms)
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void heap_down(mdm_loop_t *l, uint32_t i)
{
    mdm_timer_t *t = l->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= l->heap_len)
            break;
        if (child + 1 < l->heap_len &&
            l->heap[child + 1]->deadline_ms < l->heap[child]->deadline_ms)
            child++;
        if (l->heap[child]->deadline_ms >= t->deadline_ms)
            break;
        heap_set(l, i, l->heap[child]);
        i = child;
    }
    heap_set(l, i, t);
}

void mdm_timer_init(mdm_timer_t *t, mdm_timer_cb cb)
{
    t->cb = cb;
    t->deadline_ms = 0;
    t->heap_index = 0;
}

void mdm_timer_disarm(mdm_loop_t *l, mdm_timer_t *t)
{
    if (!t->heap_index)
        return;
    uint32_t i = t->heap_index - 1;
    t->heap_index = 0;
    l->heap_len--;
    if (i == l->heap_len)
        return;
    l->heap[i] = l->heap[l->heap_len];
    l->heap[i]->heap_index = i + 1;
    heap_down(l, i);
    heap_up(l, l->heap[i]->heap_index - 1);
}

void mdm_timer_arm(mdm_loop_t *l, mdm_timer_t *t, uint64_t ms)
{
    mdm_timer_disarm(l, t);
    if (l->heap_len == l->heap_cap) {
        uint32_t cap = l->heap_cap * 2;
        mdm_timer_t **h = realloc(l->heap, cap * sizeof(*h));
        if (!h) {
            /* Out of memory while growing the timer heap: nothing sane to do. */
            mdm_error("loop", "timer heap: out of memory");
            abort();
        }
        l->heap = h;
        l->heap_cap = cap;
    }
    t->deadline_ms = l->now_ms + ms;
    l->heap[l->heap_len] = t;
    t->heap_index = ++l->heap_len;
    heap_up(l, l->heap_len - 1);
}

static void run_timers(mdm_loop_t *l)
{
    /* Bounded: timers re-armed during this pass fire at the earliest next tick. */
    uint32_t budget = l->heap_len;
    while (l->heap_len && budget--) {
        mdm_timer_t *t = l->heap[0];
        if (t->deadline_ms > l->now_ms)
            break;
        mdm_timer_disarm(l, t);
        t->cb(t);
    }
}

int mdm_loop_add_tick_hook(mdm_loop_t *l, mdm_tick_hook_cb cb, void *arg)
{
    if (l->n_hooks == MDM_LOOP_HOOKS_MAX)
        return -ENOSPC;
    l->hooks[l->n_hooks].cb = cb;
    l->hooks[l->n_hooks].arg = arg;
    l->n_hooks++;
    return 0;
}

static unsigned collect_completions(mdm_loop_t *l)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&l->ring, head, cqe)
    {
        mdm_op_t *op = io_uring_cqe_get_data(cqe);
        n++;
        if (!op)
            continue;
        op->res = cqe->res;
        op->flags = cqe->flags;
        op->pending = false;
        op->next = NULL;
        if (l->ready_tail)
            l->ready_tail->next = op;
        else
            l->ready_head = op;
        l->ready_tail = op;
    }
    io_uring_cq_advance(&l->ring, n);
    return n;
}

int mdm_loop_run_once(mdm_loop_t *l, int max_wait_ms)
{
    uint64_t wait_ms = max_wait_ms < 0 ? 0 : (uint64_t)max_wait_ms;
    if (l->heap_len) {
        uint64_t now = mdm_now_ms();
        uint64_t due = l->heap[0]->deadline_ms;
        uint64_t until = due > now ? due - now : 0;
        if (until < wait_ms)
            wait_ms = until;
    }
    int ret;
    if (wait_ms == 0) {
        ret = io_uring_submit_and_get_events(&l->ring);
    } else {
        struct __kernel_timespec ts = {.tv_sec = (long long)(wait_ms / 1000),
                                       .tv_nsec = (long long)(wait_ms % 1000) * 1000000};
        struct io_uring_cqe *cqe = NULL;
        ret = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        return ret;

    l->now_ms = mdm_now_ms();
    l->ticks++;
    unsigned n = collect_completions(l);
    l->completions += n;
    while (l->ready_head) {
        mdm_op_t *op = l->ready_head;
        l->ready_head = op->next;
        if (!l->ready_head)
            l->ready_tail = NULL;
        op->cb(op);
    }
    run_timers(l);
    for (unsigned i = 0; i < l->n_hooks; i++)
        l->hooks[i].cb(l, l->hooks[i].arg);
    return (int)n;
}
