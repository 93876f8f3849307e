/*
 * storage/audit: the audit log: one record per mutating admin call (who, what, on which
 * target, from where, when, with which outcome).
 *
 * Key: <at_ms be64> <8 random bytes> (16 bytes). The time first makes the log sortable and
 * pageable by time; the random tail makes two events of the same millisecond distinct and
 * keeps writes idempotent across nodes (no counter). An event's id is the key as 32
 * lowercase hex digits.
 *
 * Value (format 1): 0x01, status (u16 be), then five strings who, action, target, source,
 * detail, each as u16 be length + bytes (no NUL). Decoding is strict: unknown format,
 * truncation, trailing bytes, a string longer than its field or containing NUL -> -EBADMSG.
 */
#ifndef MDM_STORAGE_AUDIT_H
#define MDM_STORAGE_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/store.h"

#define MDM_AUDIT_ID_LEN 32 /* hex digits of the 16-byte key */

typedef struct mdm_audit_event {
    char id[MDM_AUDIT_ID_LEN + 1]; /* set by put (from the key) and by reads */
    uint64_t at_ms;                /* wall clock, ms since the epoch */
    char who[64];                  /* "admin-key:1a2b3c4d", "policy:...", "cli" */
    char action[64];               /* "command.enqueue", "device.delete", "command.cancel" */
    char target[128];              /* UDID, "UDID/UUID", "12 devices" */
    char source[64];               /* client address "ip:port" */
    uint16_t status;               /* HTTP status of the answer */
    char detail[256];              /* one line: RequestType, UUID, counts, error */
} mdm_audit_event_t;

/**
 * Appends ev to b under a new key (ev->at_ms and 8 random bytes) and writes that key's id
 * into ev->id. Strings are NUL-terminated within their fields (asserted).
 * Returns 0 or MDM_ECRYPTO (no random bytes; nothing appended).
 */
MDM_MUST_CHECK int mdm_store_put_audit(mdm_batch_t *b, mdm_audit_event_t *ev);

/**
 * Calls cb (synchronously, on the caller's thread: storage workers, tools, tests) for at most
 * limit events (0 = no limit) in time order: those with at_ms >= since_ms and, when after_id
 * is a non-empty id, whose key sorts after it. ev is borrowed for the call. cb returns nonzero
 * to stop. Returns 0, cb's nonzero value, -EINVAL (after_id is not 32 hex digits),
 * MDM_ESTORE, -ENOMEM, or -EBADMSG at the first undecodable record (logged).
 */
MDM_MUST_CHECK int mdm_store_list_audit(mdm_store_t *s, uint64_t since_ms, const char *after_id,
                                        unsigned limit,
                                        int (*cb)(void *arg, const mdm_audit_event_t *ev),
                                        void *arg);

#define MDM_AUDIT_STATUS_ERROR (-1) /* mdm_audit_filter_t.status: every status >= 400 */

/* Which events a query hands over; all zero = every event. Strings: NULL or "" = any. */
typedef struct mdm_audit_filter {
    const char *action; /* exact; ending in '.' ("device."): every action it starts */
    const char *target; /* exact */
    const char *who;    /* exact */
    int status;         /* 0 any, MDM_AUDIT_STATUS_ERROR, or one exact status */
} mdm_audit_filter_t;

/** True when ev passes every condition of f. */
bool mdm_audit_matches(const mdm_audit_filter_t *f, const mdm_audit_event_t *ev);

typedef struct mdm_audit_query {
    uint64_t since_ms;         /* events at or after this time */
    const char *after_id;      /* NULL or "": from the start (or since_ms) */
    mdm_audit_filter_t filter;
    unsigned limit;            /* matching events handed over at most; 0 = no limit */
    unsigned max_scan;         /* records read at most; 0 = no bound */
    /* out */
    unsigned scanned;                      /* records read */
    char next_after[MDM_AUDIT_ID_LEN + 1]; /* id of the last record read when the listing
                                            * stopped early (limit, max_scan or cb), else "" */
} mdm_audit_query_t;

/**
 * Like mdm_store_list_audit, with q's filter and bounds: cb gets (in time order) the events
 * that match, at most q->limit of them, after reading at most q->max_scan records. Resuming
 * with after_id = q->next_after continues exactly where this listing stopped. Returns the
 * codes of mdm_store_list_audit.
 */
MDM_MUST_CHECK int mdm_store_query_audit(mdm_store_t *s, mdm_audit_query_t *q,
                                         int (*cb)(void *arg, const mdm_audit_event_t *ev),
                                         void *arg);

/** Encodes ev (without its key) into out; for tests. Returns 0 or the codes of mdm_buf. */
MDM_MUST_CHECK int mdm_audit_encode(const mdm_audit_event_t *ev, mdm_buf_t *out);

/** Decodes a value into ev (at_ms and id are left untouched). Returns 0 or -EBADMSG. */
MDM_MUST_CHECK int mdm_audit_decode(const void *val, size_t vlen, mdm_audit_event_t *ev);

#endif
