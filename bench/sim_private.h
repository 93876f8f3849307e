/*
 * What sim.c, sim_profiles.c and sim_security.c share inside the simulator: plist helpers,
 * the device state, and the handlers of the commands that read or change it. Not for the
 * simulator's users (sim.h).
 */
#ifndef MDM_BENCH_SIM_PRIVATE_H
#define MDM_BENCH_SIM_PRIVATE_H

#include <plist/plist.h>

#include "bench/sim.h"

void sim_set_str(plist_t d, const char *k, const char *v);
void sim_set_bool(plist_t d, const char *k, bool v);
void sim_set_uint(plist_t d, const char *k, uint64_t v);
/** Copies the string at key into out (truncated to len); false when absent or not a string. */
bool sim_get_string(plist_t d, const char *key, char *out, size_t len);

/** A new ErrorChain array with one entry {ErrorCode, ErrorDomain, LocalizedDescription,
 * USEnglishDescription}; sim_chain_add appends another (printf-style text). */
plist_t sim_chain_new(uint64_t code, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sim_chain_add(plist_t chain, uint64_t code, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** The Command dict of the body kept for cmd (sim_keep_command), parsed: *root receives the
 * whole plist for the caller to free. NULL (and *root NULL) when none is kept for cmd. */
plist_t sim_kept_command(const sim_mac_t *m, const sim_cmd_t *cmd, plist_t *root);

/* Read-only answers: arrays for ProfileList, InstalledApplicationList (identifiers: an array
 * of bundle identifiers to report, or NULL for all), AvailableOSUpdates, OSUpdateStatus. */
plist_t sim_profile_list(const sim_mac_t *m, bool managed_only);
plist_t sim_app_list(const sim_mac_t *m, plist_t identifiers, bool managed_only);
plist_t sim_available_os_updates(const sim_mac_t *m);
plist_t sim_os_update_status(const sim_mac_t *m);

/* Commands that change the state: each adds its response keys (ErrorChain on failure) to resp
 * and returns the status. command is the Command dict (may be NULL: no keys). */
enum sim_status sim_install_profile(sim_mac_t *m, plist_t command, plist_t resp);
enum sim_status sim_remove_profile(sim_mac_t *m, const char *identifier, plist_t resp);
enum sim_status sim_remove_application(sim_mac_t *m, const char *identifier, plist_t resp);
enum sim_status sim_apply_settings(sim_mac_t *m, plist_t command, plist_t resp);
enum sim_status sim_schedule_os_update(sim_mac_t *m, plist_t command, plist_t resp);

/** Frees m->state. */
void sim_state_free(sim_mac_t *m);

/* ---- the device state (sim_profiles.c owns it) ---- */

#define SIM_OS_UPDATES_MAX 4
#define SIM_PRK_LEN 29 /* "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX" */

/* A software update the server scheduled (ScheduleOSUpdate). */
struct sim_os_update {
    char product_key[96];
    char action[24]; /* InstallAction as the Mac reports it */
    char status[24]; /* Idle, Downloading, Installing */
};

/* FileVault: on while prk is set; the PRK escrowed to cert (cms, as FileVaultPRK.dat).
 * All zero = off (a zeroed mdm_buf_t is an empty one). */
struct sim_filevault {
    char prk[SIM_PRK_LEN + 1]; /* "" = off */
    mdm_buf_t cert;            /* escrow certificate (DER) */
    mdm_buf_t cms;             /* EnvelopedData of prk to cert */
};

struct sim_state {
    sim_profile_t *profiles; /* n_profiles of them, room for SIM_PROFILES_MAX */
    size_t n_profiles;
    bool apps_set; /* false: the Mac still has sim_default_apps */
    sim_app_t *apps;
    size_t n_apps;
    struct sim_os_update updates[SIM_OS_UPDATES_MAX];
    size_t n_updates;
    struct sim_filevault fv;
    char scep_challenge[256]; /* Challenge of the newest installed SCEP payload ("" = none) */
    /* the /connect reply body of the newest command that needs one */
    char cmd_uuid[64];
    uint8_t *cmd_body;
    size_t cmd_len;
};

/** m->state, made on first use; NULL when out of memory. */
struct sim_state *sim_state_of(sim_mac_t *m);

/** Sets chain as resp's ErrorChain and returns st; sim_format_error: a required command key
 * is missing or of the wrong type (CommandFormatError). */
enum sim_status sim_fail(plist_t resp, plist_t chain, enum sim_status st);
enum sim_status sim_format_error(plist_t resp, const char *key);

/* ---- security (sim_security.c) ---- */

/** What installing the profile whose PayloadContent array is content does to FileVault, into
 * *next (its prk stays "" when nothing changes). NULL, or the ErrorChain that fails the
 * install. sim_fv_commit makes *next the Mac's FileVault (taking its buffers) once the profile
 * is stored; sim_fv_dispose frees what was not taken. */
plist_t sim_fv_prepare(const sim_mac_t *m, plist_t content, struct sim_filevault *next);
void sim_fv_commit(sim_mac_t *m, struct sim_filevault *next);
void sim_fv_dispose(struct sim_filevault *fv);

/** The FDE_* keys of SecurityInfo into info. */
void sim_fv_security_info(const sim_mac_t *m, plist_t info);

enum sim_status sim_device_lock(sim_mac_t *m, plist_t command, plist_t resp);
enum sim_status sim_erase_device(sim_mac_t *m, plist_t command, plist_t resp);
enum sim_status sim_rotate_filevault_key(sim_mac_t *m, plist_t command, plist_t resp);

/** Whether m talks no MDM now (locked, erased or unenrolled). */
bool sim_mac_silent(const sim_mac_t *m);

#endif
