/*
 * What the policy_*.c files share: the type record, the build context, and the helpers that
 * make profiles and commands. Not for use outside the policy catalog.
 */
#ifndef MDM_ACTORS_POLICY_INTERNAL_H
#define MDM_ACTORS_POLICY_INTERNAL_H

#include "actors/policy_catalog.h"
#include "core/crypto.h"
#include "actors/policy_schema.h"


/* One build in progress. */
typedef struct mdm_pctx {
    const json_t *settings;
    const mdm_policy_meta_t *meta;
    const mdm_policy_env_t *env;
    const mdm_policy_device_t *dev;
    mdm_policy_output_t *out;
    char *err;
    size_t errlen;
    plist_t profile; /* the Configuration dictionary while a profile is being built */
    plist_t content; /* its PayloadContent array (owned by profile) */
} mdm_pctx_t;

struct mdm_policy_type {
    const char *name;
    const char *title;
    bool is_profile;
    const char *payload_type; /* the one payload of a plain profile policy, else NULL */
    /* Checks settings (an object; path is "settings"). NULL: the payload_type's keys. */
    int (*validate)(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path, char *err,
                    size_t errlen);
    /* Fills c->out from valid settings. NULL: one payload of payload_type. */
    int (*build)(const mdm_policy_type_t *t, mdm_pctx_t *c);
    /* NULL: never per device. */
    bool (*needs_device)(const json_t *s);
};


/* Checks obj as the keys of payload payload_type; skip (may be NULL) is a key of obj that the
 * caller handles (the PayloadType selector). Keys every payload carries are refused. */
MDM_MUST_CHECK int mdm_policy_check_payload(const char *payload_type, const json_t *obj,
                                            const char *skip, mdm_spath_t *path, char *err,
                                            size_t errlen);

/* Checks obj as the parameters of command request_type (RequestType excluded). */
MDM_MUST_CHECK int mdm_policy_check_command(const char *request_type, const json_t *obj,
                                            mdm_spath_t *path, char *err, size_t errlen);

/* Starts the Configuration dictionary in c. */
MDM_MUST_CHECK int mdm_pctx_profile_begin(mdm_pctx_t *c);

/* Appends a payload of type with the common keys and the members of obj (may be NULL; skip
 * as above) converted per the schema. *payload_out (may be NULL) is the new dict (owned by
 * the profile); uuid_out (may be NULL) gets its PayloadUUID. */
MDM_MUST_CHECK int mdm_pctx_add_payload(mdm_pctx_t *c, const char *type, const json_t *obj,
                                        const char *skip, plist_t *payload_out,
                                        char uuid_out[MDM_UUID_LEN + 1]);

/* Writes the profile as XML into c->out->profile_xml and frees the tree. */
MDM_MUST_CHECK int mdm_pctx_profile_end(mdm_pctx_t *c);

/* Appends a command dict {RequestType: request_type} to c->out; *cmd_out is it (still owned
 * by out). 0, -ENOMEM, or -EINVAL when out is full. */
MDM_MUST_CHECK int mdm_pctx_add_command(mdm_pctx_t *c, const char *request_type,
                                        plist_t *cmd_out);

/* Integer member of obj in [min, max], or def when absent. -EINVAL with err naming it. */
MDM_MUST_CHECK int mdm_policy_get_int(const json_t *obj, const char *key, long long min,
                                      long long max, long long def, long long *out,
                                      mdm_spath_t *path, char *err, size_t errlen);

/* -EINVAL naming the first member of obj not in the NULL-terminated list allowed. */
MDM_MUST_CHECK int mdm_policy_only_keys(const json_t *obj, const char *const *allowed,
                                        const char *owner, mdm_spath_t *path, char *err,
                                        size_t errlen);

/* Checks settings.PayloadType against allowed (NULL-terminated; allowed[0] is the default
 * when absent) and the other keys against that payload; *type_out (may be NULL) is it. */
MDM_MUST_CHECK int mdm_policy_check_selected(const json_t *s, const char *const *allowed,
                                             mdm_spath_t *path, char *err, size_t errlen,
                                             const char **type_out);

/* A profile of the one payload settings.PayloadType (default allowed[0]) picks. */
MDM_MUST_CHECK int mdm_policy_build_selected(const char *const *allowed, mdm_pctx_t *c);

/* The type records, defined in the files that implement them. */
extern const mdm_policy_type_t mdm_policy_t_airplay, mdm_policy_t_app_inventory,
    mdm_policy_t_app_uninstall, mdm_policy_t_caldav, mdm_policy_t_carddav,
    mdm_policy_t_credentials, mdm_policy_t_device_name, mdm_policy_t_exchange,
    mdm_policy_t_filevault, mdm_policy_t_firewall, mdm_policy_t_font,
    mdm_policy_t_import_profile, mdm_policy_t_ldap, mdm_policy_t_mail, mdm_policy_t_network,
    mdm_policy_t_os_update, mdm_policy_t_passcode, mdm_policy_t_profile_removal,
    mdm_policy_t_restrictions, mdm_policy_t_scep, mdm_policy_t_vpn, mdm_policy_t_webclip;

#endif
