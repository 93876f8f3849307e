/*
 * The device actor: one per UDID on its home shard. It owns the device record and the
 * device's command queue (its mailbox of work) and answers check-ins, command polls and
 * admin requests. Requests arrive as mdm_dev_req_t messages from any shard; each is answered
 * by calling req->done on the shard that sent it, after every write behind the answer is
 * durable.
 */
#ifndef MDM_ACTORS_DEVICE_H
#define MDM_ACTORS_DEVICE_H

#include <plist/plist.h>

#include "actors/actor.h"
#include "storage/mdm.h"

enum mdm_dev_req_kind {
    MDM_DEV_CHECKIN, /* PUT mdm/checkin: msg is the check-in dictionary */
    MDM_DEV_CONNECT, /* PUT mdm/connect: msg is the command-channel dictionary */
    MDM_DEV_ENQUEUE, /* admin: queue command (already stored) for this device */
    MDM_DEV_CANCEL,  /* admin: cancel a queued command */
    MDM_DEV_GET,     /* admin: device record and queue summary */
    MDM_DEV_DELETE,  /* admin: remove the device, its queue and its secrets */
    MDM_DEV_PUSH,    /* admin (202/409) or the pusher's coalescing timer (wake): push it */
    MDM_DEV_PUSH_RESULT, /* the pusher: final outcome of a push (push_status, push_reason) */
    MDM_DEV_REVOKE,  /* admin: queue the RemoveProfile of the enrollment profile (uuid, plist,
                        uuid starting with MDM_DEV_REVOKE_PREFIX) and revoke the identity */
    MDM_DEV_FLAGS,   /* admin or escrow: set_ade / set_suspended / set_fv_escrowed (-1 =
                        unchanged, 0, 1); answers the record */
};

/* CommandUUID prefix of a revocation's RemoveProfile: its acknowledgement completes it. */
#define MDM_DEV_REVOKE_PREFIX "revoke-"

typedef struct mdm_dev_req mdm_dev_req_t;

struct mdm_dev_req {
    mdm_actor_msg_t base; /* first: base.id is the UDID */
    enum mdm_dev_req_kind kind;

    /* in */
    plist_t msg;                /* CHECKIN/CONNECT: parsed body (owned, freed with the req) */
    uint8_t *body;              /* CONNECT: raw body, stored as the response (owned) */
    size_t body_len;
    char cert_sha256[65];       /* identity presented with the request ("" for admin) */
    char channel[MDM_CHANNEL_MAX + 1]; /* CONNECT/ENQUEUE: "" device channel, else UserID */
    char uuid[MDM_UUID_MAX + 1];       /* ENQUEUE/CANCEL: command UUID */
    uint8_t *plist;             /* ENQUEUE: command plist (owned) */
    size_t plist_len;
    bool wake;                  /* PUSH: end of a coalescing window (push only if commands
                                   wait), not an admin request */
    int push_status;            /* PUSH_RESULT: APNs :status, 0 = never answered */
    char push_reason[64];       /* PUSH_RESULT: APNs reason or why it was not sent */
    uint8_t push_token[128];    /* PUSH_RESULT: the token pushed to */
    size_t push_token_len;
    int set_ade, set_suspended, set_fv_escrowed; /* FLAGS: -1 unchanged, else the new value */

    /* out: HTTP status and body to answer with */
    int status;
    mdm_buf_t reply;
    const char *reply_type; /* content type; NULL for none */
    char error[200];        /* one line saying what was wrong, with status >= 400 */
    mdm_device_t device;    /* GET, FLAGS: copy of the record (with the last push's outcome) */
    bool has_bootstrap;     /* GET: a bootstrap token is escrowed */
    unsigned queued;        /* GET: entries waiting */
    uint64_t push_requested_ms; /* GET: last push handed to the pusher (memory only), 0 = none */
    mdm_user_channel_t *users;  /* GET: copies of the user channels (owned), n_users of them */
    unsigned n_users;

    /* plumbing */
    mdm_commit_waiter_t _waiter;
    void (*done)(mdm_dev_req_t *r); /* runs on the sending shard; frees via mdm_dev_req_free */
    void *ctx;
};

struct mdm_device_options {
    unsigned max_queue;           /* queue entries per device */
    uint64_t command_ttl_ms;      /* queued commands expire after this (0 = never) */
    bool user_auth_digest;        /* UserAuthenticate: empty DigestChallenge instead of 410 */
    const uint8_t *secrets_key;   /* 32 bytes, seals bootstrap and unlock tokens */
    /* Observers (optional), called on the device's shard while it handles the message; the
     * writes of that message become durable with the shard's next commit. */
    void (*on_enrolled)(mdm_shard_t *sh, const char *udid);   /* first TokenUpdate */
    void (*on_answered)(mdm_shard_t *sh, const char *udid, const char *uuid, int status,
                        const uint8_t *response, size_t len); /* a command's final answer */
};

/** Sets up the device actor type for rt (call once before the shards start). */
void mdm_device_setup(mdm_actors_t *rt, const struct mdm_device_options *o);

/** Allocates a request for udid (copied, must be 1..63 characters). NULL on -ENOMEM. */
mdm_dev_req_t *mdm_dev_req_new(enum mdm_dev_req_kind kind, const char *udid);
void mdm_dev_req_free(mdm_dev_req_t *r);

/**
 * Seals the plist of command uuid for storage (MDM_COMMAND_SEALED): a command that carries
 * secrets is stored that way and opened again when a device actor loads its queue. Any
 * thread, after mdm_device_setup. Returns the codes of mdm_seal().
 */
MDM_MUST_CHECK int mdm_dev_seal_command(const char *uuid, const void *plist, size_t len,
                                        mdm_buf_t *out);

/** Sends r to the device's actor; r->done runs later on this shard. */
void mdm_dev_send(mdm_dev_req_t *r);

#endif
