/* loop: timers in deadline order, disarm, socket I/O through the ring, provided buffers. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "core/loop.h"

static int fired[8];
static int n_fired;

struct tagged_timer {
    mdm_timer_t t;
    int tag;
};

static void on_timer(mdm_timer_t *t)
{
    struct tagged_timer *tt = MDM_CONTAINER_OF(t, struct tagged_timer, t);
    fired[n_fired++] = tt->tag;
}

struct io {
    mdm_op_t op;
    int done;
};

static void on_io(mdm_op_t *op)
{
    struct io *io = MDM_CONTAINER_OF(op, struct io, op);
    io->done++;
}

static int hooks_run;
static void on_hook(mdm_loop_t *l, void *arg)
{
    (void)l;
    (void)arg;
    hooks_run++;
}

int main(void)
{
    mdm_loop_t loop;
    int ret = mdm_loop_init(&loop, 64);
    if (ret == -ENOSYS || ret == -EPERM)
        return 77; /* io_uring not allowed here */
    CHECK_EQ_INT(ret, 0);
    CHECK_EQ_INT(mdm_loop_add_tick_hook(&loop, on_hook, NULL), 0);

    /* Timers fire in deadline order; a disarmed one never fires. */
    struct tagged_timer t[5];
    int delays[5] = {40, 10, 30, 20, 15};
    for (int i = 0; i < 5; i++) {
        mdm_timer_init(&t[i].t, on_timer);
        t[i].tag = delays[i];
        mdm_timer_arm(&loop, &t[i].t, (uint64_t)delays[i]);
    }
    mdm_timer_disarm(&loop, &t[2].t); /* 30 */
    CHECK(!mdm_timer_armed(&t[2].t));
    mdm_timer_arm(&loop, &t[4].t, 25); /* re-arm moves it: 15 -> 25 */
    t[4].tag = 25;
    for (int i = 0; i < 100 && n_fired < 4; i++)
        CHECK(mdm_loop_run_once(&loop, 100) >= 0);
    CHECK_EQ_INT(n_fired, 4);
    CHECK_EQ_INT(fired[0], 10);
    CHECK_EQ_INT(fired[1], 20);
    CHECK_EQ_INT(fired[2], 25);
    CHECK_EQ_INT(fired[3], 40);
    CHECK(hooks_run > 0);

    /* send and recv through the ring, then recv into a provided buffer. */
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct io snd = {.op.cb = on_io}, rcv = {.op.cb = on_io};
    char in[16] = {0};
    mdm_loop_recv(&loop, &rcv.op, sv[1], in, sizeof(in));
    mdm_loop_send(&loop, &snd.op, sv[0], "ping", 4);
    for (int i = 0; i < 100 && (!snd.done || !rcv.done); i++)
        CHECK(mdm_loop_run_once(&loop, 100) >= 0);
    CHECK_EQ_INT(snd.op.res, 4);
    CHECK_EQ_INT(rcv.op.res, 4);
    CHECK(memcmp(in, "ping", 4) == 0);

    CHECK_EQ_INT(mdm_loop_setup_buffers(&loop, 8, 4096), 0);
    struct io sel = {.op.cb = on_io};
    mdm_loop_recv_select(&loop, &sel.op, sv[1], MDM_LOOP_BGID, 4096);
    CHECK_EQ_INT(write(sv[0], "pong!", 5), 5);
    for (int i = 0; i < 100 && !sel.done; i++)
        CHECK(mdm_loop_run_once(&loop, 100) >= 0);
    CHECK_EQ_INT(sel.op.res, 5);
    uint8_t *buf = mdm_loop_buffer(&loop, &sel.op);
    CHECK(buf != NULL && memcmp(buf, "pong!", 5) == 0);
    mdm_loop_release_buffer(&loop, &sel.op);

    /* A pending recv is cancelled. */
    struct io pend = {.op.cb = on_io}, can = {.op.cb = on_io};
    mdm_loop_recv(&loop, &pend.op, sv[1], in, sizeof(in));
    CHECK(mdm_loop_run_once(&loop, 0) >= 0);
    mdm_loop_cancel(&loop, &can.op, &pend.op);
    for (int i = 0; i < 100 && (!pend.done || !can.done); i++)
        CHECK(mdm_loop_run_once(&loop, 100) >= 0);
    CHECK_EQ_INT(pend.op.res, -ECANCELED);
    close(sv[0]);
    close(sv[1]);
    mdm_loop_dispose(&loop);
    return check_finish("loop");
}
