/*
 * storage/mdm: typed records of the MDM domain on top of store.h: devices, commands (stored
 * once), per-device command queue entries, command results and sealed secrets. Key layouts and
 * codecs stay in storage/mdm.c; every record is a versioned binary encoding (a format byte
 * first), so later versions can read older records. Decoding is strict: a truncated, corrupt
 * or unknown-format record, or a string longer than its field, reads as -EBADMSG.
 *
 * Keys (all idempotent: derived from UDID and command UUID, never from counters):
 *   devices:  <udid>                                  -> mdm_device_t
 *   commands: <uuid>                                  -> mdm_command_t (plist stored once)
 *   queue:    <udid> 0x00 <channel> 0x00 <enqueued_ms be64> <uuid>  -> mdm_queue_entry_t
 *   history:  <udid> 0x00 <uuid>                      -> mdm_result_t (status history+response)
 *   secrets:  <udid> 0x00 <name>                      -> sealed bytes (core/seal envelope)
 * <channel> is "" for the device channel, else the user channel's UserID. The 0x00 after the
 * UDID keeps the records of "A" apart from those of "AB". Fields that are part of the key are
 * not repeated in the value, so a queue entry is a few bytes.
 *
 * Identifiers (udid, uuid, secret name: 1..63 bytes; channel: 0..63 bytes) are C strings.
 * Writers assert them (the structs cannot hold longer ones); readers take them from the
 * network too, so they return -EINVAL for an empty or too long one instead.
 */
#ifndef MDM_STORAGE_MDM_H
#define MDM_STORAGE_MDM_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/store.h"

#define MDM_UDID_MAX 63
#define MDM_UUID_MAX 63
#define MDM_CHANNEL_MAX 63
#define MDM_SECRET_NAME_MAX 63
#define MDM_VSHARDS 4096

enum mdm_device_state {
    MDM_DEVICE_NEW = 0,          /* never seen */
    MDM_DEVICE_AUTHENTICATED,    /* Authenticate received, waiting for TokenUpdate */
    MDM_DEVICE_ENROLLED,         /* first TokenUpdate received */
    MDM_DEVICE_CHECKED_OUT,      /* CheckOut received: unenrolled, queue closed */
    MDM_DEVICE_REVOKED,          /* revoked by an administrator: its identity is refused */
};

typedef struct mdm_device {
    char udid[MDM_UDID_MAX + 1];
    uint16_t vshard;        /* mdm_vshard(udid), fixed forever */
    uint64_t version;       /* +1 on every write (compare-and-set by the owner) */
    uint32_t enrollment;    /* 1 at the first Authenticate, +1 at each re-enrollment */
    uint8_t state;          /* enum mdm_device_state */
    char serial[64];
    char model[64];
    char model_name[64];
    char product_name[64];
    char os_version[32];
    char build_version[32];
    char device_name[128];
    char topic[160];
    uint8_t push_token[128];
    uint16_t push_token_len;
    char push_magic[128];
    bool push_token_invalid;
    char cert_sha256[65];   /* identity certificate bound at Authenticate */
    uint64_t authenticated_ms, enrolled_ms, last_seen_ms, checked_out_ms;
    bool awaiting_configuration;
    char enroll_id[33];     /* enrollment record (storage/enroll.h) of the certificate; "" */
    /* outcome of the last push to the device channel (APNs :status, 0 = no answer) */
    uint64_t last_push_ms;
    uint16_t last_push_status;
    char last_push_reason[64];
    /* security (format 3) */
    bool ade;                /* enrolled through Automated Device Enrollment (bootstrap token) */
    bool policies_suspended; /* selective wipe: mdmd's profiles removed, no policy delivered */
    bool fv_key_escrowed;    /* a FileVault personal recovery key is held (secret "fv_prk") */
    uint64_t revoked_ms;     /* revocation asked (0 = never); state REVOKED once done */
    char revoked_cert[65];   /* SHA-256 of the identity certificate revoked then */
} mdm_device_t;

/** A user channel of a device (TokenUpdate with a UserID): where its pushes go. */
typedef struct mdm_user_channel {
    char udid[MDM_UDID_MAX + 1];
    char user_id[MDM_CHANNEL_MAX + 1]; /* the UserID (a GUID on macOS); the queue's channel */
    char short_name[64];
    char long_name[128];
    uint8_t push_token[128];
    uint16_t push_token_len;
    char push_magic[128];
    bool push_token_invalid;
    uint64_t updated_ms;    /* last TokenUpdate */
    uint64_t last_push_ms;
    uint16_t last_push_status;
    char last_push_reason[64];
} mdm_user_channel_t;

enum mdm_command_status {
    MDM_CMD_QUEUED = 0,
    MDM_CMD_SENT,
    MDM_CMD_ACKNOWLEDGED,
    MDM_CMD_ERROR,
    MDM_CMD_NOTNOW,
    MDM_CMD_CANCELLED,
    MDM_CMD_EXPIRED,
    MDM_CMD_FORMAT_ERROR, /* CommandFormatError */
};

#define MDM_COMMAND_SEALED 1u /* plist is a core/seal envelope (the command carries secrets) */

/** The command itself, stored once however many devices it goes to. */
typedef struct mdm_command {
    char uuid[MDM_UUID_MAX + 1];
    char request_type[64];
    uint64_t created_ms;
    char created_by[64];   /* who queued it (API key name, "policy:...") */
    uint8_t flags;         /* MDM_COMMAND_SEALED */
    uint8_t *plist;        /* the full command plist as sent (XML); owned, free with mdm_command_dispose */
    size_t plist_len;
} mdm_command_t;

/** One device's queue entry for a command. */
typedef struct mdm_queue_entry {
    char udid[MDM_UDID_MAX + 1];
    char channel[MDM_CHANNEL_MAX + 1];
    char uuid[MDM_UUID_MAX + 1];
    uint64_t enqueued_ms;  /* FIFO order key */
    uint32_t enrollment;   /* enrollment it was queued for; entries of older ones never go out */
    uint8_t status;        /* MDM_CMD_QUEUED, MDM_CMD_SENT or MDM_CMD_NOTNOW */
    uint64_t updated_ms;
    uint64_t expires_ms;   /* 0 = never */
} mdm_queue_entry_t;

#define MDM_RESULT_EVENTS_MAX 16

/** A command's status history and the device's full response, per device. */
typedef struct mdm_result {
    char udid[MDM_UDID_MAX + 1];
    char uuid[MDM_UUID_MAX + 1];
    char channel[MDM_CHANNEL_MAX + 1];
    uint8_t status; /* latest */
    unsigned n_events;
    struct {
        uint8_t status;
        uint64_t at_ms;
    } events[MDM_RESULT_EVENTS_MAX]; /* oldest first; when full the oldest non-first are dropped */
    uint8_t *response;  /* the device's response plist (XML as received); owned */
    size_t response_len;
} mdm_result_t;

/** vshard of a UDID: mdm_hash64(udid) % 4096, fixed forever. */
uint16_t mdm_vshard(const char *udid);

/** Lower-case names for logs and the API ("queued", "not_now", ...); "unknown" otherwise. */
const char *mdm_command_status_name(enum mdm_command_status s);
const char *mdm_device_state_name(enum mdm_device_state s);

/* ---- writes: append to a batch (the caller commits it) -------------------------------------
 * Records are encoded straight into the batch (no allocation besides the batch's own growth;
 * a failed growth is remembered by the batch and reported by its commit as -ENOMEM).
 * Preconditions (asserted): identifiers as above, d->vshard == mdm_vshard(d->udid),
 * d->state/e->status/r->status and event statuses are valid enum values,
 * d->push_token_len <= sizeof(d->push_token), r->n_events <= MDM_RESULT_EVENTS_MAX. */
void mdm_store_put_device(mdm_batch_t *b, const mdm_device_t *d);
void mdm_store_delete_device(mdm_batch_t *b, const char *udid);
void mdm_store_put_user_channel(mdm_batch_t *b, const mdm_user_channel_t *u);
void mdm_store_put_command(mdm_batch_t *b, const mdm_command_t *c);
void mdm_store_put_queue_entry(mdm_batch_t *b, const mdm_queue_entry_t *e);
/** Only e's key fields (udid, channel, enqueued_ms, uuid) are used. */
void mdm_store_delete_queue_entry(mdm_batch_t *b, const mdm_queue_entry_t *e);
void mdm_store_put_result(mdm_batch_t *b, const mdm_result_t *r);
/**
 * Appends an event to r (in memory): status and time; keeps r->status current. When the
 * history is full, the oldest event but the first (usually "queued") is dropped, so the
 * history keeps how it started and the MDM_RESULT_EVENTS_MAX - 1 latest events.
 */
void mdm_result_add_event(mdm_result_t *r, enum mdm_command_status status, uint64_t at_ms);

/* ---- reads (synchronous: storage workers and jobs, tools, tests; never on a shard thread) ---
 * On every return *out is fully set or zeroed, so mdm_*_dispose(out) is always safe. */
/** Returns 0, MDM_ENOTFOUND, -EINVAL (bad identifier), MDM_ESTORE, -EBADMSG (undecodable). */
MDM_MUST_CHECK int mdm_store_get_device(mdm_store_t *s, const char *udid, mdm_device_t *out);
/** As get_device; also -ENOMEM. out->plist is owned by out. */
MDM_MUST_CHECK int mdm_store_get_command(mdm_store_t *s, const char *uuid, mdm_command_t *out);
/** As get_device; also -ENOMEM. out->response is owned by out. */
MDM_MUST_CHECK int mdm_store_get_result(mdm_store_t *s, const char *udid, const char *uuid,
                                        mdm_result_t *out);
/** Free the owned buffers and zero the struct. NULL is a no-op. */
void mdm_command_dispose(mdm_command_t *c);
void mdm_result_dispose(mdm_result_t *r);

/*
 * Listings call cb synchronously for each record; the record is borrowed and valid only during
 * the call (a result's response points into the engine's memory: do not dispose it, copy what
 * you keep). cb returns nonzero to stop. They return 0 when all were visited, cb's nonzero
 * value, -EINVAL (bad udid), MDM_ESTORE, -ENOMEM, or -EBADMSG at the first undecodable record
 * (logged with its key; the records before it were delivered).
 */

/** Every queue entry of udid (all channels), in key order: channel ("" first), then FIFO
 * (enqueued_ms, then uuid). */
MDM_MUST_CHECK int mdm_store_list_queue(mdm_store_t *s, const char *udid,
                                        int (*cb)(void *arg, const mdm_queue_entry_t *e),
                                        void *arg);

/** Results of a device, by command UUID order. */
MDM_MUST_CHECK int mdm_store_list_results(mdm_store_t *s, const char *udid,
                                          int (*cb)(void *arg, const mdm_result_t *r),
                                          void *arg);

/** The user channels of udid, by UserID. */
MDM_MUST_CHECK int mdm_store_list_user_channels(mdm_store_t *s, const char *udid,
                                                int (*cb)(void *arg, const mdm_user_channel_t *u),
                                                void *arg);

/** Devices in UDID order, strictly after `after` ("" = from the start): to page, pass the
 * last UDID of the previous page and stop cb after a page's worth. */
MDM_MUST_CHECK int mdm_store_list_devices(mdm_store_t *s, const char *after,
                                          int (*cb)(void *arg, const mdm_device_t *d),
                                          void *arg);

/**
 * Appends to b the deletion of a device and everything keyed by its UDID (its queue entries,
 * results, secrets, user channels, policy deployments and reported apps; the shared command
 * records stay). Reads the store to find the keys:
 * run it where synchronous reads are allowed. Returns 0, -EINVAL, MDM_ESTORE or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_store_purge_device(mdm_store_t *s, mdm_batch_t *b, const char *udid);

/* ---- secrets: values sealed by the caller (core/seal), stored as they are ------------------
 * name says which secret ("bootstrap_token", "unlock_token", "fv_prk", "lock_pin", ...). */
void mdm_store_put_secret(mdm_batch_t *b, const char *udid, const char *name, const void *sealed,
                          size_t len);
void mdm_store_delete_secret(mdm_batch_t *b, const char *udid, const char *name);
/** Appends the sealed value to out (reset out first to reuse it). Returns 0, MDM_ENOTFOUND,
 * -EINVAL, MDM_ESTORE, or -ENOMEM / MDM_ETOOBIG from out. */
MDM_MUST_CHECK int mdm_store_get_secret(mdm_store_t *s, const char *udid, const char *name,
                                        mdm_buf_t *out);

#endif
