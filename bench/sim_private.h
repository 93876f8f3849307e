/*
 * What sim.c and sim_profiles.c share inside the simulator: plist helpers and the handlers of
 * the commands that read or change the Mac's state. Not for the simulator's users (sim.h).
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

#endif
