/*
 * storage/audit tests: the value codec (round trip with every field at its longest and with
 * empty fields; strict decoding: every truncation, trailing bytes, unknown formats, lengths
 * over a field or past the end, NUL inside a string, and every single-byte corruption ->
 * -EBADMSG or a well-formed event, never a crash or overread: run it under ASan), and the log
 * on a temporary RocksDB directory (ids from the key, time order across batches and within a
 * millisecond, since/limit/after paging, stopping callbacks, bad cursors, undecodable records),
 * and filtered queries (action prefix, exact target and who, status classes, the scan bound and
 * next_after: paging with any bound visits every matching event once).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/log.h"
#include "storage/audit.h"
#include "storage/store.h"

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static mdm_store_t *open_store(const char *path)
{
    struct mdm_store_options opt = {.path = path, .durability = MDM_DURABILITY_NONE};
    mdm_store_t *s = NULL;
    int ret = mdm_store_open(&s, &opt);
    if (ret != 0)
        fprintf(stderr, "mdm_store_open(%s): %s\n", path, mdm_strerror(ret));
    return s;
}

/* Fills a char[size] field with size - 1 copies of c (the longest string it holds). */
#define FILL_MAX(field, c)                                                                     \
    do {                                                                                       \
        memset((field), (c), sizeof(field) - 1);                                               \
        (field)[sizeof(field) - 1] = 0;                                                        \
    } while (0)

/* Every field at its longest; bytes that are not ASCII (but never NUL) included. */
static void full_event(mdm_audit_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->at_ms = 0x0102030405060708ull;
    FILL_MAX(ev->who, 'w');
    FILL_MAX(ev->action, 'a');
    FILL_MAX(ev->target, 't');
    FILL_MAX(ev->source, 's');
    FILL_MAX(ev->detail, 'd');
    ev->who[0] = (char)0xff;
    ev->target[5] = (char)0x80;
    ev->detail[sizeof(ev->detail) - 2] = (char)0x01;
    ev->status = 0xffff;
}

static bool fields_eq(const mdm_audit_event_t *a, const mdm_audit_event_t *b)
{
    return a->status == b->status && strcmp(a->who, b->who) == 0 &&
           strcmp(a->action, b->action) == 0 && strcmp(a->target, b->target) == 0 &&
           strcmp(a->source, b->source) == 0 && strcmp(a->detail, b->detail) == 0;
}

/* Every string of a decoded event is NUL-terminated within its field. */
static bool terminated(const mdm_audit_event_t *ev)
{
    return memchr(ev->who, 0, sizeof(ev->who)) && memchr(ev->action, 0, sizeof(ev->action)) &&
           memchr(ev->target, 0, sizeof(ev->target)) &&
           memchr(ev->source, 0, sizeof(ev->source)) &&
           memchr(ev->detail, 0, sizeof(ev->detail));
}

/* Decodes from a heap copy of exactly len bytes, so ASan sees any read past the end. */
static int decode_exact(const uint8_t *p, size_t len, mdm_audit_event_t *ev)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, p, len);
    int ret = mdm_audit_decode(copy, len, ev);
    free(copy);
    return ret;
}

/* ---- codec ---- */

static void test_round_trip(void)
{
    mdm_audit_event_t ev, back;
    full_event(&ev);
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_audit_encode(&ev, &v), 0);
    /* format, status, five u16 lengths and the strings */
    size_t expect = 1 + 2 + 5 * 2 + (sizeof(ev.who) - 1) + (sizeof(ev.action) - 1) +
                    (sizeof(ev.target) - 1) + (sizeof(ev.source) - 1) + (sizeof(ev.detail) - 1);
    CHECK_EQ_INT(v.len, expect);
    const uint8_t *p = mdm_buf_head(&v);
    CHECK_EQ_INT(p[0], 1);
    CHECK(p[1] == 0xff && p[2] == 0xff);
    CHECK(p[3] == 0 && p[4] == sizeof(ev.who) - 1);

    /* decode leaves at_ms and id alone */
    memset(&back, 0x77, sizeof(back));
    back.at_ms = 42;
    snprintf(back.id, sizeof(back.id), "untouched");
    CHECK_EQ_INT(decode_exact(p, v.len, &back), 0);
    CHECK(fields_eq(&ev, &back));
    CHECK(terminated(&back));
    CHECK_EQ_INT(back.at_ms, 42);
    CHECK_STR(back.id, "untouched");

    /* Empty strings and status 0. */
    mdm_audit_event_t empty;
    memset(&empty, 0, sizeof(empty));
    mdm_buf_reset(&v);
    CHECK_EQ_INT(mdm_audit_encode(&empty, &v), 0);
    CHECK_EQ_INT(v.len, 1 + 2 + 5 * 2);
    memset(&back, 0x77, sizeof(back));
    CHECK_EQ_INT(decode_exact(mdm_buf_head(&v), v.len, &back), 0);
    CHECK(fields_eq(&empty, &back));
    CHECK_STR(back.detail, "");

    /* A realistic event. */
    mdm_audit_event_t real = {.status = 201};
    snprintf(real.who, sizeof(real.who), "admin-key:3f1c2a9b");
    snprintf(real.action, sizeof(real.action), "command.enqueue");
    snprintf(real.target, sizeof(real.target), "0000FE00-1A2B3C4D5E6F7081");
    snprintf(real.source, sizeof(real.source), "10.0.0.7:51234");
    snprintf(real.detail, sizeof(real.detail), "DeviceLock 8C5E: 1 queued, 0 failed");
    mdm_buf_reset(&v);
    CHECK_EQ_INT(mdm_audit_encode(&real, &v), 0);
    CHECK_EQ_INT(decode_exact(mdm_buf_head(&v), v.len, &back), 0);
    CHECK(fields_eq(&real, &back));
    CHECK_EQ_INT(back.status, 201);
    mdm_buf_dispose(&v);
}

static void test_strict_decoding(void)
{
    mdm_audit_event_t ev, back;
    full_event(&ev);
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_audit_encode(&ev, &v), 0);
    const uint8_t *p = mdm_buf_head(&v);
    size_t n = v.len;

    /* Every truncation. */
    unsigned bad = 0;
    for (size_t len = 0; len < n; len++)
        if (decode_exact(p, len, &back) == -EBADMSG)
            bad++;
    CHECK_EQ_INT(bad, n);
    CHECK_EQ_INT(mdm_audit_decode(NULL, 0, &back), -EBADMSG);

    /* Trailing bytes, even a single zero. */
    uint8_t *big = malloc(n + 8);
    CHECK(big != NULL);
    if (!big) {
        mdm_buf_dispose(&v);
        return;
    }
    memcpy(big, p, n);
    memset(big + n, 0, 8);
    for (size_t extra = 1; extra <= 8; extra++)
        CHECK_EQ_INT(decode_exact(big, n + extra, &back), -EBADMSG);

    /* Unknown formats. */
    memcpy(big, p, n);
    const uint8_t formats[] = {0, 2, 0x7f, 0xff};
    for (size_t i = 0; i < sizeof(formats); i++) {
        big[0] = formats[i];
        CHECK_EQ_INT(decode_exact(big, n, &back), -EBADMSG);
    }

    /* Every single-byte corruption: a clean -EBADMSG, or (where a byte of a string changed
     * to another non-NUL byte, or the status changed) a well-formed event. */
    unsigned ok = 0, refused = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t flips[] = {0x00, 0xff, 0x01, 0x80, (uint8_t)(p[i] ^ 0x40)};
        for (size_t f = 0; f < sizeof(flips); f++) {
            if (flips[f] == p[i])
                continue;
            memcpy(big, p, n);
            big[i] = flips[f];
            memset(&back, 0x55, sizeof(back));
            int ret = decode_exact(big, n, &back);
            if (ret == 0 && terminated(&back))
                ok++;
            else if (ret == -EBADMSG)
                refused++;
            else
                other++;
        }
    }
    CHECK_EQ_INT(other, 0);
    CHECK(ok > 0 && refused > 0);
    /* A zero byte inside any string is refused. */
    size_t first_string = 3 + 2; /* who's bytes */
    memcpy(big, p, n);
    big[first_string + 3] = 0;
    CHECK_EQ_INT(decode_exact(big, n, &back), -EBADMSG);
    memcpy(big, p, n);
    big[n - 1] = 0; /* last byte of detail */
    CHECK_EQ_INT(decode_exact(big, n, &back), -EBADMSG);
    /* A length that runs past the end. */
    memcpy(big, p, n);
    big[3] = 0x7f;
    CHECK_EQ_INT(decode_exact(big, n, &back), -EBADMSG);
    free(big);

    /* Hand-made values: a string as long as its field (no room for the NUL) is refused, one
     * byte shorter is accepted. */
    uint8_t hand[1 + 2 + 5 * 2 + 300];
    for (int over = 0; over <= 1; over++) {
        size_t pos = 0;
        hand[pos++] = 1;
        hand[pos++] = 0;
        hand[pos++] = 200;
        size_t lens[5] = {sizeof(ev.who) - 1 + (size_t)over, 0, 0, 0, 0};
        for (int s = 0; s < 5; s++) {
            hand[pos++] = (uint8_t)(lens[s] >> 8);
            hand[pos++] = (uint8_t)lens[s];
            memset(hand + pos, 'x', lens[s]);
            pos += lens[s];
        }
        memset(&back, 0, sizeof(back));
        int ret = decode_exact(hand, pos, &back);
        if (over) {
            CHECK_EQ_INT(ret, -EBADMSG);
        } else {
            CHECK_EQ_INT(ret, 0);
            CHECK_EQ_INT(strlen(back.who), sizeof(back.who) - 1);
            CHECK_EQ_INT(back.status, 200);
        }
    }
    /* The same for detail, the longest field (length 256 of 256). */
    {
        size_t pos = 0;
        hand[pos++] = 1;
        hand[pos++] = 0;
        hand[pos++] = 1;
        for (int s = 0; s < 4; s++) {
            hand[pos++] = 0;
            hand[pos++] = 0;
        }
        hand[pos++] = 1;
        hand[pos++] = 0; /* 256 */
        memset(hand + pos, 'y', 256);
        pos += 256;
        CHECK_EQ_INT(decode_exact(hand, pos, &back), -EBADMSG);
        hand[pos - 256 - 2] = 0;
        hand[pos - 256 - 1] = 255; /* 255 of 256: fits, but 1 byte is now trailing */
        CHECK_EQ_INT(decode_exact(hand, pos, &back), -EBADMSG);
        CHECK_EQ_INT(decode_exact(hand, pos - 1, &back), 0);
        CHECK_EQ_INT(strlen(back.detail), 255);
    }
    mdm_buf_dispose(&v);
}

/* ---- the log in a store ---- */

#define MAXSEEN 64

struct seen {
    unsigned n;
    mdm_audit_event_t ev[MAXSEEN];
    unsigned stop_at; /* 0: never; else return 42 on the stop_at-th event */
};

static int collect(void *arg, const mdm_audit_event_t *ev)
{
    struct seen *s = arg;
    if (s->n < MAXSEEN)
        s->ev[s->n] = *ev;
    s->n++;
    if (s->stop_at && s->n == s->stop_at)
        return 42;
    return 0;
}

static int list(mdm_store_t *st, uint64_t since, const char *after, unsigned limit,
                struct seen *out)
{
    memset(out, 0, sizeof(*out));
    return mdm_store_list_audit(st, since, after, limit, collect, out);
}

static bool is_lower_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* at_ms of the events put below, in put order (not time order); 3 share 2000, 2 share 5000. */
static const uint64_t put_times[] = {5000, 1000, 2000, 9000, 2000, 3000, 5000, 7000, 2000, 1};
#define NPUT (sizeof(put_times) / sizeof(put_times[0]))

static void test_log(void)
{
    char *dir = strdup(check_tmpdir("audit"));
    mdm_store_t *st = dir ? open_store(dir) : NULL;
    CHECK(st != NULL);
    if (!st) {
        free(dir);
        return;
    }
    struct seen *all = calloc(1, sizeof(*all)), *pg = calloc(1, sizeof(*pg));
    CHECK(all && pg);
    if (!all || !pg)
        goto out;

    CHECK_EQ_INT(list(st, 0, NULL, 0, all), 0); /* empty log */
    CHECK_EQ_INT(all->n, 0);

    /* Put in three batches, out of time order. */
    mdm_audit_event_t put[NPUT];
    mdm_batch_t *b = mdm_batch_new();
    for (size_t i = 0; i < NPUT; i++) {
        if (i == 0)
            full_event(&put[i]);
        else
            memset(&put[i], 0, sizeof(put[i]));
        put[i].at_ms = put_times[i];
        if (i) {
            put[i].status = (uint16_t)(200 + i);
            snprintf(put[i].who, sizeof(put[i].who), "admin-key:%08zx", i);
            snprintf(put[i].action, sizeof(put[i].action), "command.enqueue");
            snprintf(put[i].target, sizeof(put[i].target), "UDID-%zu", i);
            snprintf(put[i].source, sizeof(put[i].source), "127.0.0.1:%zu", 40000 + i);
            snprintf(put[i].detail, sizeof(put[i].detail), "event %zu", i);
        }
        CHECK_EQ_INT(mdm_store_put_audit(b, &put[i]), 0);
        CHECK(is_lower_hex(put[i].id, MDM_AUDIT_ID_LEN));
        /* The id starts with at_ms as 16 hex digits (big endian). */
        char ms[17];
        snprintf(ms, sizeof(ms), "%016llx", (unsigned long long)put[i].at_ms);
        CHECK(strncmp(put[i].id, ms, 16) == 0);
        if (i == 3 || i == 6) {
            CHECK_EQ_INT(mdm_store_commit(st, b), 0);
            mdm_batch_clear(b);
        }
    }
    CHECK_EQ_INT(mdm_store_commit(st, b), 0);
    mdm_batch_free(b);
    /* Two events of the same millisecond have distinct ids. */
    CHECK(strcmp(put[2].id, put[4].id) != 0 && strcmp(put[2].id, put[8].id) != 0 &&
          strcmp(put[4].id, put[8].id) != 0);

    /* Everything, oldest first, ids strictly ascending, every field back. */
    CHECK_EQ_INT(list(st, 0, NULL, 0, all), 0);
    CHECK_EQ_INT(all->n, NPUT);
    unsigned matched = 0;
    for (unsigned i = 0; i < all->n && i < MAXSEEN; i++) {
        if (i) {
            CHECK(all->ev[i - 1].at_ms <= all->ev[i].at_ms);
            CHECK(strcmp(all->ev[i - 1].id, all->ev[i].id) < 0);
        }
        for (size_t k = 0; k < NPUT; k++)
            if (strcmp(put[k].id, all->ev[i].id) == 0 && put[k].at_ms == all->ev[i].at_ms &&
                fields_eq(&put[k], &all->ev[i]))
                matched++;
    }
    CHECK_EQ_INT(matched, NPUT);
    CHECK_EQ_INT(all->ev[0].at_ms, 1);
    CHECK_EQ_INT(all->ev[NPUT - 1].at_ms, 9000);

    /* since: at or after. */
    struct {
        uint64_t since;
        unsigned expect;
    } sinces[] = {{0, NPUT}, {1, NPUT},  {2, NPUT - 1}, {2000, 8}, {2001, 5},
                  {5000, 4}, {9000, 1}, {9001, 0},     {UINT64_MAX, 0}};
    for (size_t i = 0; i < sizeof(sinces) / sizeof(sinces[0]); i++) {
        CHECK_EQ_INT(list(st, sinces[i].since, NULL, 0, pg), 0);
        CHECK_EQ_INT(pg->n, sinces[i].expect);
        for (unsigned k = 0; k < pg->n && k < MAXSEEN; k++)
            CHECK(pg->ev[k].at_ms >= sinces[i].since);
        /* and it is the tail of the full list */
        if (pg->n && pg->n <= all->n)
            CHECK_STR(pg->ev[0].id, all->ev[all->n - pg->n].id);
    }
    CHECK_EQ_INT(list(st, 2000, "", 0, pg), 0); /* an empty after is no cursor */
    CHECK_EQ_INT(pg->n, 8);

    /* limit. */
    CHECK_EQ_INT(list(st, 0, NULL, 1, pg), 0);
    CHECK_EQ_INT(pg->n, 1);
    CHECK_STR(pg->ev[0].id, all->ev[0].id);
    CHECK_EQ_INT(list(st, 0, NULL, 4, pg), 0);
    CHECK_EQ_INT(pg->n, 4);
    CHECK_EQ_INT(list(st, 0, NULL, NPUT, pg), 0);
    CHECK_EQ_INT(pg->n, NPUT);
    CHECK_EQ_INT(list(st, 0, NULL, 1000, pg), 0);
    CHECK_EQ_INT(pg->n, NPUT);
    CHECK_EQ_INT(list(st, 5000, NULL, 3, pg), 0);
    CHECK_EQ_INT(pg->n, 3);
    CHECK_EQ_INT(pg->ev[0].at_ms, 5000);

    /* Paging with after: pages of 3 visit every event once, in order. */
    for (unsigned page = 1; page <= 4; page++) {
        char cursor[MDM_AUDIT_ID_LEN + 1] = "";
        unsigned got = 0, pages = 0;
        for (;;) {
            CHECK_EQ_INT(list(st, 0, cursor, page, pg), 0);
            if (pg->n == 0)
                break;
            pages++;
            for (unsigned k = 0; k < pg->n && got < all->n; k++, got++)
                CHECK_STR(pg->ev[k].id, all->ev[got].id);
            snprintf(cursor, sizeof(cursor), "%s", pg->ev[pg->n - 1].id);
            if (pages > NPUT + 1)
                break;
        }
        CHECK_EQ_INT(got, NPUT);
        CHECK_EQ_INT(pages, (NPUT + page - 1) / page);
    }
    /* after the last: nothing; after an id between events (same ms, other tail). */
    CHECK_EQ_INT(list(st, 0, all->ev[NPUT - 1].id, 0, pg), 0);
    CHECK_EQ_INT(pg->n, 0);
    CHECK_EQ_INT(list(st, 0, "00000000000007d00000000000000000", 0, pg), 0); /* 2000 ms, 0 */
    CHECK_EQ_INT(pg->n, 8);
    CHECK_EQ_INT(list(st, 0, "00000000000007d0ffffffffffffffff", 0, pg), 0); /* past 2000 */
    CHECK_EQ_INT(pg->n, 5);
    CHECK_EQ_INT(pg->ev[0].at_ms, 3000);
    /* Upper-case hex names the same key. */
    char upper[MDM_AUDIT_ID_LEN + 1];
    snprintf(upper, sizeof(upper), "%s", all->ev[2].id);
    for (char *c = upper; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    CHECK_EQ_INT(list(st, 0, upper, 0, pg), 0);
    CHECK_EQ_INT(pg->n, NPUT - 3);
    /* after and since together: both apply. */
    CHECK_EQ_INT(list(st, 5000, all->ev[0].id, 0, pg), 0);
    CHECK_EQ_INT(pg->n, 4);
    CHECK_EQ_INT(pg->ev[0].at_ms, 5000);
    CHECK_EQ_INT(list(st, 1, all->ev[6].id, 2, pg), 0);
    CHECK_EQ_INT(pg->n, 2);
    CHECK_STR(pg->ev[0].id, all->ev[7].id);

    /* Bad cursors. */
    const char *bad_after[] = {"x", "0000000000000000000000000000000",
                               "000000000000000000000000000000000",
                               "0000000000000000000000000000000g", "00000000-0000-4000-8000-00000"};
    for (size_t i = 0; i < sizeof(bad_after) / sizeof(bad_after[0]); i++) {
        CHECK_EQ_INT(list(st, 0, bad_after[i], 0, pg), -EINVAL);
        CHECK_EQ_INT(pg->n, 0);
    }

    /* A callback that stops: its value comes back, no more calls. */
    memset(pg, 0, sizeof(*pg));
    pg->stop_at = 3;
    CHECK_EQ_INT(mdm_store_list_audit(st, 0, NULL, 0, collect, pg), 42);
    CHECK_EQ_INT(pg->n, 3);
    memset(pg, 0, sizeof(*pg));
    pg->stop_at = 3; /* stops on the limit's last event: the callback wins */
    CHECK_EQ_INT(mdm_store_list_audit(st, 0, NULL, 3, collect, pg), 42);
    CHECK_EQ_INT(pg->n, 3);

    /* An undecodable record: listing reports -EBADMSG when it reaches it, not before. */
    b = mdm_batch_new();
    uint8_t key[16] = {0, 0, 0, 0, 0, 0, 0x27, 0x10, 1, 2, 3, 4, 5, 6, 7, 8}; /* 10000 ms */
    const uint8_t junk[] = {1, 0, 200, 0, 9, 'x'};                              /* truncated */
    mdm_batch_put(b, MDM_CF_AUDIT, key, sizeof(key), junk, sizeof(junk));
    CHECK_EQ_INT(mdm_store_commit(st, b), 0);
    mdm_batch_free(b);
    CHECK_EQ_INT(list(st, 0, NULL, 0, pg), -EBADMSG);
    CHECK_EQ_INT(pg->n, NPUT);
    CHECK_EQ_INT(list(st, 0, NULL, NPUT, pg), 0); /* the page ends before it */
    CHECK_EQ_INT(pg->n, NPUT);
    CHECK_EQ_INT(list(st, 10001, NULL, 0, pg), 0); /* since past it */
    CHECK_EQ_INT(pg->n, 0);
    /* A key of the wrong length. */
    b = mdm_batch_new();
    mdm_batch_delete(b, MDM_CF_AUDIT, key, sizeof(key));
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_audit_encode(&put[1], &v), 0);
    mdm_batch_put(b, MDM_CF_AUDIT, key, 9, mdm_buf_head(&v), v.len);
    CHECK_EQ_INT(mdm_store_commit(st, b), 0);
    mdm_batch_free(b);
    mdm_buf_dispose(&v);
    CHECK_EQ_INT(list(st, 0, NULL, 0, pg), -EBADMSG);
    CHECK_EQ_INT(pg->n, NPUT);

out:
    free(all);
    free(pg);
    mdm_store_close(st);
    rm_rf(dir);
    free(dir);
}

/* ---- filters and bounded queries ---- */

static mdm_audit_event_t mk_event(const char *who, const char *action, const char *target,
                                  uint16_t status)
{
    mdm_audit_event_t ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.who, sizeof(ev.who), "%s", who);
    snprintf(ev.action, sizeof(ev.action), "%s", action);
    snprintf(ev.target, sizeof(ev.target), "%s", target);
    ev.status = status;
    return ev;
}

static void test_matches(void)
{
    mdm_audit_event_t ev = mk_event("admin-key:1", "device.delete", "UDID-1", 404);
    mdm_audit_filter_t f = {0};
    CHECK(mdm_audit_matches(&f, &ev));
    struct {
        mdm_audit_filter_t f;
        bool want;
    } cases[] = {
        {{.action = "device.delete"}, true},   {{.action = "device."}, true},
        {{.action = "device"}, false},         {{.action = "device.del"}, false},
        {{.action = "command."}, false},       {{.action = ""}, true},
        {{.action = "."}, false},              {{.action = "device.delete."}, false},
        {{.target = "UDID-1"}, true},          {{.target = "UDID-"}, false},
        {{.target = "udid-1"}, false},         {{.who = "admin-key:1"}, true},
        {{.who = "admin-key:"}, false},        {{.status = 404}, true},
        {{.status = 200}, false},              {{.status = MDM_AUDIT_STATUS_ERROR}, true},
        {{.action = "device.", .target = "UDID-1", .who = "admin-key:1", .status = 404}, true},
        {{.action = "device.", .target = "UDID-2"}, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_EQ_INT(mdm_audit_matches(&cases[i].f, &ev), cases[i].want);
    mdm_audit_filter_t err = {.status = MDM_AUDIT_STATUS_ERROR};
    ev.status = 399;
    CHECK(!mdm_audit_matches(&err, &ev));
    ev.status = 400;
    CHECK(mdm_audit_matches(&err, &ev));
    ev.status = 503;
    CHECK(mdm_audit_matches(&err, &ev));
}

#define QN 40 /* events of the query test, 1 ms apart */

/* Event i: action by i % 4, target by i % 5, who by i % 2, status by i % 3. */
static void put_query_events(mdm_store_t *st)
{
    static const char *actions[] = {"device.delete", "device.push", "command.enqueue",
                                    "devices.x"};
    static const uint16_t statuses[] = {200, 404, 503};
    mdm_batch_t *b = mdm_batch_new();
    for (unsigned i = 0; i < QN; i++) {
        char target[16], who[16];
        snprintf(target, sizeof(target), "T%u", i % 5);
        snprintf(who, sizeof(who), "w%u", i % 2);
        mdm_audit_event_t ev = mk_event(who, actions[i % 4], target, statuses[i % 3]);
        ev.at_ms = 1000 + i;
        snprintf(ev.detail, sizeof(ev.detail), "%u", i);
        CHECK_EQ_INT(mdm_store_put_audit(b, &ev), 0);
    }
    CHECK_EQ_INT(mdm_store_commit(st, b), 0);
    mdm_batch_free(b);
}

/* Runs q from after_id until next_after is "", collecting every event handed over. */
static unsigned page_all(mdm_store_t *st, mdm_audit_query_t q, struct seen *out,
                         unsigned *pages)
{
    char cursor[MDM_AUDIT_ID_LEN + 1] = "";
    memset(out, 0, sizeof(*out));
    *pages = 0;
    for (;;) {
        q.after_id = cursor;
        CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, out), 0);
        (*pages)++;
        if (q.max_scan)
            CHECK(q.scanned <= q.max_scan);
        if (!q.next_after[0] || *pages > 2 * QN)
            break;
        snprintf(cursor, sizeof(cursor), "%s", q.next_after);
    }
    return out->n;
}

static void test_query(void)
{
    char *dir = strdup(check_tmpdir("audit-query"));
    mdm_store_t *st = dir ? open_store(dir) : NULL;
    struct seen *pg = calloc(1, sizeof(*pg));
    CHECK(st && pg);
    if (!st || !pg)
        goto out;
    put_query_events(st);

    /* Each filter alone, read whole (no bounds). */
    struct {
        mdm_audit_filter_t f;
        unsigned want;
    } cases[] = {
        {{0}, QN},
        {{.action = "device."}, QN / 2},         /* device.delete and device.push */
        {{.action = "device.push"}, QN / 4},
        {{.action = "devices."}, QN / 4},        /* not device.* */
        {{.action = "command"}, 0},              /* exact: no such action */
        {{.target = "T3"}, QN / 5},
        {{.who = "w1"}, QN / 2},
        {{.status = 404}, 13},                   /* i % 3 == 1 below 40 */
        {{.status = MDM_AUDIT_STATUS_ERROR}, 26}, /* 404 and 503 */
        {{.action = "device.", .who = "w0"}, QN / 4}, /* i % 4 == 0 is even */
        {{.action = "device.", .target = "T0", .status = 200}, 1}, /* i = 0 */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        mdm_audit_query_t q = {.filter = cases[c].f};
        memset(pg, 0, sizeof(*pg));
        CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
        CHECK_EQ_INT(pg->n, cases[c].want);
        CHECK_EQ_INT(q.scanned, QN);
        CHECK_STR(q.next_after, "");
        for (unsigned k = 0; k < pg->n && k < MAXSEEN; k++)
            CHECK(mdm_audit_matches(&cases[c].f, &pg->ev[k]));
        /* Paging with every combination of small bounds finds the same events, in order. */
        for (unsigned limit = 0; limit <= 3; limit++) {
            for (unsigned scan = 0; scan <= 7; scan += 7) {
                struct seen *again = calloc(1, sizeof(*again));
                unsigned pages;
                if (!again)
                    continue;
                mdm_audit_query_t b = {.filter = cases[c].f, .limit = limit, .max_scan = scan};
                CHECK_EQ_INT(page_all(st, b, again, &pages), pg->n);
                for (unsigned k = 0; k < again->n && k < MAXSEEN; k++)
                    CHECK_STR(again->ev[k].id, pg->ev[k].id);
                if (scan)
                    CHECK(pages >= QN / scan);
                free(again);
            }
        }
    }

    /* limit: next_after is the last event handed over. */
    mdm_audit_query_t q = {.filter = {.target = "T1"}, .limit = 2};
    memset(pg, 0, sizeof(*pg));
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    CHECK_EQ_INT(pg->n, 2);
    CHECK_STR(q.next_after, pg->ev[1].id);
    CHECK_EQ_INT(q.scanned, 7); /* events 1 and 6 */
    /* max_scan: next_after is the last record read, even when it did not match. */
    q = (mdm_audit_query_t){.filter = {.target = "T4"}, .max_scan = 3};
    memset(pg, 0, sizeof(*pg));
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    CHECK_EQ_INT(pg->n, 0);
    CHECK_EQ_INT(q.scanned, 3);
    CHECK_EQ_INT(strlen(q.next_after), MDM_AUDIT_ID_LEN);
    CHECK(strncmp(q.next_after, "00000000000003ea", 16) == 0); /* event 2, at 1002 ms */
    /* A cursor that is not a whole id is refused. */
    q.after_id = "00000000000003ea";
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), -EINVAL);
    /* Resuming from next_after reads on from event 3. */
    char cursor[MDM_AUDIT_ID_LEN + 1];
    memset(pg, 0, sizeof(*pg));
    q = (mdm_audit_query_t){.filter = {.target = "T4"}, .max_scan = 3};
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    snprintf(cursor, sizeof(cursor), "%s", q.next_after);
    q.after_id = cursor;
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    CHECK_EQ_INT(pg->n, 1);
    CHECK_STR(pg->ev[0].detail, "4");
    /* The log read to its end: no next_after, even with bounds left. */
    q = (mdm_audit_query_t){.since_ms = 1000 + QN - 2, .limit = 5, .max_scan = 5};
    memset(pg, 0, sizeof(*pg));
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    CHECK_EQ_INT(pg->n, 2);
    CHECK_STR(q.next_after, "");
    /* A callback that stops: its value, next_after at that event. */
    q = (mdm_audit_query_t){.filter = {.action = "device."}};
    memset(pg, 0, sizeof(*pg));
    pg->stop_at = 3;
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 42);
    CHECK_STR(q.next_after, pg->ev[2].id);
    /* since with filters: only later events. */
    q = (mdm_audit_query_t){.since_ms = 1020, .filter = {.who = "w0"}};
    memset(pg, 0, sizeof(*pg));
    CHECK_EQ_INT(mdm_store_query_audit(st, &q, collect, pg), 0);
    CHECK_EQ_INT(pg->n, 10);
    CHECK_EQ_INT(q.scanned, 20);
out:
    free(pg);
    mdm_store_close(st);
    if (dir)
        rm_rf(dir);
    free(dir);
}

int main(void)
{
    mdm_log_setup(MDM_LOG_ERROR, false);
    test_round_trip();
    test_strict_decoding();
    test_log();
    test_matches();
    test_query();
    return check_finish("audit");
}
