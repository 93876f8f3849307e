/*
 * sim: a simulated Mac that plays the MDM protocol as macOS does, for the integration tests
 * and for mdm-bench.
 *
 * A Mac has a UDID, a serial number, a model and an OS version, its own EC P-256 key and an
 * identity certificate issued from the instance CA (CN = the Mac's name, EKU clientAuth; the
 * files live in the environment's work dir), and one keep-alive TLS connection to the device
 * listener that it opens on first use and reopens when the server has closed it.
 *
 * Identity: by default the Mac presents its certificate as the TLS client certificate. With
 * sign it also signs every request body (header Mdm-Signature: base64 of a detached CMS
 * SignedData, as macOS does when the enrollment profile sets SignMessage); with no_identity it
 * presents no client certificate; with plain_http it talks plain HTTP to env->plain_port (a
 * device listener behind a TLS-terminating proxy), where only the signature identifies it.
 *
 * The protocol part is separate from the I/O: sim_build_* write request bodies (XML plists,
 * shaped after Apple's schema in shared/apple-device-management/mdm) and HTTP requests into an
 * mdm_buf_t, and sim_parse_* read replies, so a non-blocking driver can reuse them. The
 * blocking calls (sim_put and everything built on it) send one request and wait for its reply.
 *
 * Commands: sim_answer (sim_build_answer without I/O) acts as macOS does. The Mac keeps state:
 * installed configuration profiles (InstallProfile opens a CMS-signed profile and checks that
 * its signer chains to the instance CA; the same PayloadIdentifier replaces), applications
 * (RemoveApplication removes managed ones), the names Settings gives it, and scheduled OS
 * updates; failures answer Error with an ErrorChain shaped like macOS's. Tests make drift
 * with sim_mac_remove_profile_locally / sim_mac_install_profile_locally / sim_mac_set_apps and
 * failures with fail_install_identifier. sim_respond sends an explicit status and changes
 * nothing.
 *
 * Security (sim_security.c): DeviceLock locks the Mac (PIN required), EraseDevice wipes it,
 * removing the enrollment profile unenrolls it (sim_answer then sends CheckOut), a profile
 * with FileVault2 Enable "On" and an FDERecoveryKeyEscrow turns FileVault on with an escrowed
 * personal recovery key that SecurityInfo reports and RotateFileVaultKey replaces. A locked,
 * erased or unenrolled Mac talks no MDM: the blocking calls return -1 at once (see below).
 *
 * Memory: a Mac without a connection is under 1 KB; its TLS context and connection exist only
 * while it is connected (sim_mac_disconnect drops them), and its device state (m->state) only
 * once a command needed or changed it (sim_mac_dispose frees it).
 *
 * Threads: a Mac is used by one thread at a time; an environment is read-only once set up.
 */
#ifndef MDM_BENCH_SIM_H
#define MDM_BENCH_SIM_H

#include <errno.h> /* -EACCES of sim_mac_unlock */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/scep.h"
#include "core/tls.h"

/** What every Mac of a run shares. Fill with sim_env_init; read-only afterwards. */
typedef struct sim_env {
    char ca_cert[512];  /* instance CA certificate: verifies the server, issues identities */
    char ca_key[512];   /* its key */
    char work_dir[512]; /* where identity keys and certificates are written */
    char instance[64];  /* path prefix, "zdm" by default */
    char topic[160];    /* APNs topic sent in Authenticate/TokenUpdate */
    char host[64];      /* IPv4 literal to connect to, "127.0.0.1" by default */
    int port;           /* device listener */
    int plain_port;     /* plain-HTTP device listener, 0 = none (for plain_http Macs) */
    int timeout_ms;     /* per request; 10 s by default */
} sim_env_t;

/**
 * Sets env up for the instance folder instance_dir (its ca/ca.crt and ca/ca.key), the device
 * listener port, and work_dir (created if missing). Returns 0 or -errno.
 */
int sim_env_init(sim_env_t *env, const char *instance_dir, const char *work_dir, int port);

/** Request types the simulator answers with a realistic body (bits for notnow_mask). */
enum sim_request_type {
    SIM_REQ_OTHER = 0,
    SIM_REQ_DEVICE_INFORMATION,
    SIM_REQ_SECURITY_INFO,
    SIM_REQ_INSTALLED_APPLICATION_LIST,
    SIM_REQ_PROFILE_LIST,
    SIM_REQ_CERTIFICATE_LIST,
    SIM_REQ_INSTALL_PROFILE,
    SIM_REQ_REMOVE_PROFILE,
    SIM_REQ_REMOVE_APPLICATION,
    SIM_REQ_SETTINGS,
    SIM_REQ_OS_UPDATE_SCAN,       /* ScheduleOSUpdateScan */
    SIM_REQ_AVAILABLE_OS_UPDATES,
    SIM_REQ_SCHEDULE_OS_UPDATE,
    SIM_REQ_OS_UPDATE_STATUS,
    SIM_REQ_DEVICE_LOCK,
    SIM_REQ_ERASE_DEVICE,
    SIM_REQ_ROTATE_FILEVAULT_KEY, /* RotateFileVaultKey */
};
#define SIM_NOTNOW_ALL (~0u) /* notnow_mask: answer NotNow to everything */

enum sim_status {
    SIM_ACKNOWLEDGED,
    SIM_ERROR,
    SIM_NOTNOW,
    SIM_COMMAND_FORMAT_ERROR,
};

/** A command the server handed out. Plain data. */
typedef struct sim_cmd {
    char uuid[64];         /* CommandUUID; "" = no command (empty 200) */
    char request_type[64]; /* Command.RequestType */
    enum sim_request_type type;
    uint64_t query_mask; /* DeviceInformation: queries asked that the sim knows; 0 = all */
    char identifier[256]; /* RemoveProfile, RemoveApplication: Command.Identifier */
    bool managed_only;    /* ProfileList ManagedOnly, InstalledApplicationList ManagedAppsOnly */
} sim_cmd_t;

/* ---- device state: profiles, applications ----------------------------------------------
 * What a Mac has installed lives on the heap (m->state), made on first use and freed by
 * sim_mac_dispose; a Mac that never saw a state-changing command has none and answers with
 * its defaults (the enrollment profile, sim_default_apps). */

#define SIM_PROFILES_MAX 64 /* installed profiles besides the enrollment profile */
#define SIM_PAYLOADS_MAX 32 /* payloads in one profile */
#define SIM_APPS_MAX 64

/** One payload of an installed profile (PayloadContent item). */
typedef struct sim_payload {
    char type[128];
    char identifier[256];
    char uuid[64];
    char display_name[128];
    uint64_t version;
} sim_payload_t;

/** An installed configuration profile. */
typedef struct sim_profile {
    char identifier[256];
    char uuid[64];
    char display_name[128];
    char organization[128];
    uint64_t version;
    bool managed;   /* installed over MDM (false: by hand, sim_mac_install_profile_locally) */
    bool is_signed; /* came as CMS SignedData (its signer chains to the instance CA) */
    size_t n_payloads;
    sim_payload_t *payloads;
} sim_profile_t;

/** An installed application. */
typedef struct sim_app {
    char identifier[128]; /* bundle identifier */
    char name[64];
    char short_version[32]; /* CFBundleShortVersionString */
    char version[48];       /* CFBundleVersion */
    uint64_t bundle_size;
    bool managed; /* installed by MDM: RemoveApplication may remove it */
} sim_app_t;

struct sim_state; /* private to the simulator */

typedef struct sim_mac {
    const sim_env_t *env;
    char udid[64];
    char name[64]; /* certificate CN and file name: <work_dir>/<name>.{key,crt} */
    char serial[16];
    char model[24];      /* e.g. "Mac14,2" */
    char model_name[24]; /* e.g. "MacBook Air" */
    char os_version[12];
    char build_version[12];
    uint8_t push_token[32];
    char push_magic[40];
    unsigned notnow_mask;  /* bit (1u << enum sim_request_type): sim_answer says NotNow */
    bool no_identity;      /* connect without a client certificate */
    bool sign;             /* add Mdm-Signature to every request */
    bool sign_tamper;      /* tests: flip one body byte after signing (the signature breaks) */
    bool plain_http;       /* plain HTTP to env->plain_port instead of TLS to env->port */
    bool apple_silicon;
    /* Key and certificate that sign (PEM paths, borrowed); NULL = the Mac's own identity. */
    const char *sign_key;
    const char *sign_cert;
    /* connection (NULL/-1 when closed; tls and ctx stay NULL with plain_http) */
    int fd;
    mdm_tls_ctx_t *ctx;
    mdm_tls_conn_t *tls;
    mdm_buf_t plain_in; /* plain_http: bytes received and not yet parsed */
    unsigned connects; /* TLS connections opened so far */
    /* Names set by Settings (DeviceName, HostName); "" = derived from model and serial. */
    char device_name[64];
    char host_name[64];
    /* Tests: an InstallProfile whose PayloadIdentifier equals this fails with an ErrorChain
     * (borrowed; NULL = none). */
    const char *fail_install_identifier;
    /* Security actions (sim_build_answer sets these; see "Security" below). */
    bool locked;            /* DeviceLock: at the firmware PIN screen until sim_mac_unlock */
    bool erased;            /* EraseDevice: wiped, talks no MDM until re-enrolled */
    bool unenrolled;        /* its enrollment profile was removed: talks no MDM */
    char lock_pin[8];       /* DeviceLock PIN */
    char erase_pin[8];      /* EraseDevice PIN ("" when none was given) */
    char lock_message[256]; /* DeviceLock Message ("" when none) */
    int checkout_status;    /* HTTP status of the CheckOut sim_answer sent after the
                             * enrollment profile's removal; -1 no reply; 0 none sent */
    struct sim_state *state; /* profiles, apps, kept command body; NULL until needed */
} sim_mac_t;

/**
 * Makes a Mac: a UDID (udid, or a random one when NULL: a hardware UUID for an Intel Mac, the
 * "0000FE00-" form for Apple Silicon, alternating with seq), serial, model and OS, and a new
 * key and identity certificate from the instance CA. Returns 0 or an x509/-errno code.
 */
int sim_mac_init(sim_mac_t *m, const sim_env_t *env, const char *udid, unsigned seq);

/** Issues the Mac a new key and certificate (as after an erase and re-enrollment) and closes
 * its connection. Returns 0 or an x509 code. */
int sim_mac_new_identity(sim_mac_t *m);

/** Closes the connection (the next request opens a new one). */
void sim_mac_disconnect(sim_mac_t *m);

/** One SCEP exchange as a Mac makes it (sim_scep). */
typedef struct sim_scep {
    enum mdm_scep_message_type type; /* PKCSReq, or RenewalReq (signed with the current cert) */
    const char *challenge;           /* the profile's one-time challenge; NULL = none */
    bool use_get;                    /* GET ...&message=<base64> instead of POST */
    /* out */
    int http_status;                 /* of the PKIOperation */
    enum mdm_scep_status status;     /* of the CertRep (valid with http_status 200) */
    enum mdm_scep_fail_info fail_info;
} sim_scep_t;

/**
 * Gets an identity from the SCEP service at /<instance>/scep as a Mac does after installing
 * an enrollment profile: GetCACert (the RA), a new RSA-2048 key, a CSR with CN = m->name and
 * the challenge, signed with a self-signed certificate (PKCSReq) or with the Mac's current
 * identity (RenewalReq), sent over TLS without a client certificate. On SUCCESS the key and
 * the issued certificate become the Mac's identity (its files) and its connection is closed.
 * Returns 0 when a CertRep came back (s->status says which; the identity changes only on
 * SUCCESS), -1 when the exchange failed (s->http_status set when a response came), or a
 * negative code from key or message making.
 */
int sim_scep(sim_mac_t *m, sim_scep_t *s);

/** Closes the connection and frees the device state; the certificate files stay. */
void sim_mac_dispose(sim_mac_t *m);

/** The applications a new Mac has (Safari, Chrome, zoom.us, Slack; the last two managed). */
extern const sim_app_t sim_default_apps[];
extern const size_t sim_default_apps_count;

/** Replaces the Mac's application list with n apps (n <= SIM_APPS_MAX). 0, -EINVAL, -ENOMEM. */
int sim_mac_set_apps(sim_mac_t *m, const sim_app_t *apps, size_t n);
/** The installed app with this bundle identifier, or NULL. Valid until the state changes. */
const sim_app_t *sim_mac_find_app(const sim_mac_t *m, const char *identifier);
size_t sim_mac_app_count(const sim_mac_t *m);

/* ---- security ----------------------------------------------------------------------------
 * DeviceLock {PIN (6 digits, required), Message, PhoneNumber}: acknowledged (MessageResult
 * "Success" with a Message or PhoneNumber), then m->locked, lock_pin, lock_message. A missing
 * PIN is a CommandFormatError, a malformed one an Error.
 * EraseDevice {PIN, ObliterationBehavior, ...}: an Intel Mac needs a 6-digit PIN (kept in
 * erase_pin), Apple Silicon ignores it. Acknowledged, then m->erased: profiles, FileVault,
 * names and the lock are gone, only Apple's own apps stay, and the identity is no longer
 * used. sim_mac_new_identity or sim_authenticate (re-enrollment) clears erased.
 * RemoveProfile of the enrollment profile (mdmd.<instance>.enroll): acknowledged, then
 * m->unenrolled; the profiles MDM installed go with it and managed apps stay as unmanaged
 * ones. sim_answer sends CheckOut after the acknowledgement (m->checkout_status).
 * sim_authenticate clears unenrolled.
 * FileVault: installing a profile that holds com.apple.MCX.FileVault2 with Enable "On" and a
 * com.apple.security.FDERecoveryKeyEscrow whose EncryptCertPayloadUUID names a
 * com.apple.security.pkcs1 payload of the same profile turns FileVault on: a new personal
 * recovery key (PRK, "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX" of A-Z 0-9), escrowed as a CMS
 * EnvelopedData to that certificate (SecurityInfo FDE_PersonalRecoveryKeyCMS, with
 * FDE_PersonalRecoveryKeyDeviceKey = the serial). A reference to a missing or non-pkcs1
 * payload, or a certificate that cannot encrypt, fails the install. Removing the profile
 * leaves FileVault on, as macOS does.
 * RotateFileVaultKey {KeyType "personal", FileVaultUnlock {Password = the current PRK},
 * ReplyEncryptionCertificate}: a new PRK, re-escrowed, and RotateResult
 * {EncryptedNewRecoveryKey} enveloped to ReplyEncryptionCertificate (none without one).
 * FileVault off or a wrong Password: Error (MCMDMErrorDomain 12075 / 12076). */

/** Enters the PIN at the lock screen: 0 when it matches (or the Mac is not locked; it is then
 * unlocked), -EACCES otherwise. */
int sim_mac_unlock(sim_mac_t *m, const char *pin);
/** The Challenge of the SCEP payload of the newest profile installed over MDM that had one
 * (an identity renewal's enrollment profile); "" when none. */
const char *sim_mac_scep_challenge(const sim_mac_t *m);
/** The current FileVault personal recovery key; "" when FileVault is off. */
const char *sim_mac_filevault_prk(const sim_mac_t *m);

/** Installed profiles (not counting the enrollment profile) and one by PayloadIdentifier
 * (NULL when not installed). Pointers are valid until the state changes. */
size_t sim_mac_profile_count(const sim_mac_t *m);
const sim_profile_t *sim_mac_find_profile(const sim_mac_t *m, const char *identifier);
/** The user removed the profile by hand (drift the server should notice). 0 or -ENOENT. */
int sim_mac_remove_profile_locally(sim_mac_t *m, const char *identifier);
/** The user installed a profile (XML or binary plist) by hand: listed with IsManaged false.
 * 0, -EBADMSG (not a configuration profile), -ENOSPC or -ENOMEM. */
int sim_mac_install_profile_locally(sim_mac_t *m, const void *profile, size_t len);

/* ---- protocol: bodies and parsing (no I/O) -------------------------------------------------
 * Builders append to out (reset it first to reuse it) and return 0, -ENOMEM or MDM_ETOOBIG. */

/** A check-in message with only MessageType, UDID and Topic (for the message types that need
 * nothing else, and for tests of refusals). */
int sim_build_checkin(const sim_mac_t *m, const char *message_type, mdm_buf_t *out);
int sim_build_authenticate(const sim_mac_t *m, mdm_buf_t *out);
/** unlock may be NULL: no UnlockToken. */
int sim_build_token_update(const sim_mac_t *m, const uint8_t *unlock, size_t unlock_len,
                           mdm_buf_t *out);
int sim_build_checkout(const sim_mac_t *m, mdm_buf_t *out);
/** len 0: SetBootstrapToken without a token (asks the server to delete it). */
int sim_build_set_bootstrap(const sim_mac_t *m, const uint8_t *token, size_t len, mdm_buf_t *out);
int sim_build_get_bootstrap(const sim_mac_t *m, mdm_buf_t *out);
int sim_build_idle(const sim_mac_t *m, mdm_buf_t *out);
/** The response to cmd with status st; Acknowledged carries the data its RequestType asks for,
 * Error an ErrorChain. The Mac's state does not change (InstallProfile is acknowledged
 * without installing anything): sim_build_answer is the Mac that acts. */
int sim_build_response(const sim_mac_t *m, const sim_cmd_t *cmd, enum sim_status st,
                       mdm_buf_t *out);

/** Keeps the /connect reply body that carried cmd (a copy, in m->state) so that answering can
 * read the command's keys; only for request types that need more than sim_cmd_t holds
 * (InstallProfile, Settings, ScheduleOSUpdate, InstalledApplicationList with Identifiers,
 * DeviceLock, EraseDevice, RotateFileVaultKey).
 * One body is kept: the newest. sim_connect_idle, sim_respond and sim_answer call it for the
 * command that comes back. Returns 0 or -ENOMEM. */
int sim_keep_command(sim_mac_t *m, const sim_cmd_t *cmd, const uint8_t *body, size_t len);

/**
 * The response the Mac sends for cmd, acting on it: NotNow when notnow_mask says so; else
 * InstallProfile, RemoveProfile, RemoveApplication, Settings and ScheduleOSUpdate change the
 * state and answer Acknowledged, or Error / CommandFormatError with an ErrorChain as macOS
 * does (a broken signature, a signer that does not chain to the instance CA, a malformed
 * profile, fail_install_identifier, a profile or app that is not installed or not managed);
 * everything else is acknowledged with its data. A body-needing command whose body is not
 * kept (answered out of order) is read as a command without keys.
 * Returns 0, -ENOMEM or MDM_ETOOBIG.
 */
int sim_build_answer(sim_mac_t *m, const sim_cmd_t *cmd, mdm_buf_t *out);

/** sim_parse_command + sim_keep_command + sim_build_answer: the whole Mac side of one
 * command, without I/O. cmd receives the command; an empty body (no command) leaves out
 * empty. Returns 0, -EBADMSG (not a command), -ENOMEM or MDM_ETOOBIG. */
int sim_handle_command(sim_mac_t *m, const uint8_t *body, size_t len, sim_cmd_t *cmd,
                       mdm_buf_t *out);

/** "PUT <path> HTTP/1.1" with headers and body, for the env's host. */
int sim_build_http_put(const sim_env_t *env, const char *path, const char *content_type,
                       const void *body, size_t len, mdm_buf_t *out);

/** Appends the Mdm-Signature value for body (base64 of a detached CMS SignedData made with
 * m->sign_key/sign_cert, or the Mac's own key and certificate) to out. Returns 0 or a cms
 * code. */
int sim_sign(const sim_mac_t *m, const void *body, size_t len, mdm_buf_t *out);

/**
 * Looks for one complete HTTP response at the start of p[0..len). Returns its total length
 * (and sets *status, *body_off, *body_len, *close when the server said Connection: close),
 * 0 when more bytes are needed, or -EBADMSG.
 */
long sim_parse_http_response(const uint8_t *p, size_t len, int *status, size_t *body_off,
                             size_t *body_len, bool *close);

/** Reads a /connect reply: an empty body is no command (cmd->uuid ""). Returns 0 or -EBADMSG
 * (not a plist dict, or no CommandUUID / Command.RequestType). */
int sim_parse_command(const uint8_t *body, size_t len, sim_cmd_t *cmd);

/** Reads a GetBootstrapToken reply into token (reset first; empty when none). 0 or -EBADMSG. */
int sim_parse_bootstrap(const uint8_t *body, size_t len, mdm_buf_t *token);

const char *sim_status_name(enum sim_status st);

/* ---- blocking I/O ----------------------------------------------------------------------------
 * Each returns the HTTP status, or -1 when no reply came (connect/handshake failure, the server
 * closed, timeout). out (may be NULL) receives the response body.
 * A locked, erased or unenrolled Mac talks no MDM: sim_put and everything built on it (also
 * sim_connect_idle, sim_respond, sim_answer) return -1 at once without I/O; sim_scep is not
 * affected. sim_authenticate first clears erased and unenrolled (re-enrollment). */

/** PUT body to path ("/zdm/mdm/checkin", ...) on the Mac's connection. Returns 0 and sets
 * *status, or -1. A request on a reused connection that the server closed is retried once on a
 * new one. */
int sim_put(sim_mac_t *m, const char *path, const void *body, size_t len, int *status,
            mdm_buf_t *out);

/** PUT to /<instance>/mdm/checkin or /<instance>/mdm/connect. */
int sim_checkin(sim_mac_t *m, const mdm_buf_t *body, mdm_buf_t *out);
int sim_connect(sim_mac_t *m, const mdm_buf_t *body, mdm_buf_t *out);

int sim_authenticate(sim_mac_t *m, mdm_buf_t *out);
/** Sends a fresh random Token and PushMagic (kept in m) and topic; unlock may be NULL. */
int sim_token_update(sim_mac_t *m, const uint8_t *unlock, size_t unlock_len, mdm_buf_t *out);
int sim_checkout(sim_mac_t *m, mdm_buf_t *out);
int sim_set_bootstrap_token(sim_mac_t *m, const uint8_t *token, size_t len, mdm_buf_t *out);
/** token receives the escrowed token (empty when none). */
int sim_get_bootstrap_token(sim_mac_t *m, mdm_buf_t *token);

/** Status Idle; cmd receives the command handed out (uuid "" when none). A reply that is not
 * a command plist makes cmd->request_type "?" (and the status is still returned). */
int sim_connect_idle(sim_mac_t *m, sim_cmd_t *cmd);
/** Answers cmd with st; next (may be NULL) receives the command that came back with the
 * reply. */
int sim_respond(sim_mac_t *m, const sim_cmd_t *cmd, enum sim_status st, sim_cmd_t *next);
/** Answers cmd as the Mac would (sim_build_answer): NotNow when notnow_mask says so, else
 * the command acts on the Mac's state and the status says how it went. The answer is sent
 * even when the command locked, erased or unenrolled the Mac; the connection is then closed,
 * and after an enrollment profile's removal CheckOut is sent first (m->checkout_status). */
int sim_answer(sim_mac_t *m, const sim_cmd_t *cmd, sim_cmd_t *next);

#endif
