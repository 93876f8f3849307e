/*
 * Logging: levels, plain text or JSON lines, to stderr. Thread-safe (one write(2) per line).
 */
#ifndef MDM_CORE_LOG_H
#define MDM_CORE_LOG_H

#include <stdbool.h>

enum mdm_log_level { MDM_LOG_DEBUG = 0, MDM_LOG_INFO, MDM_LOG_WARN, MDM_LOG_ERROR };

/** Sets the minimum level and the format (JSON lines when json is true). */
void mdm_log_setup(enum mdm_log_level level, bool json);

/** Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int mdm_log_level_parse(const char *name);

/** Logs one line for module (e.g. "tls", "store") unless below the configured level. */
void mdm_log(enum mdm_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define mdm_debug(mod, ...) mdm_log(MDM_LOG_DEBUG, mod, __VA_ARGS__)
#define mdm_info(mod, ...) mdm_log(MDM_LOG_INFO, mod, __VA_ARGS__)
#define mdm_warn(mod, ...) mdm_log(MDM_LOG_WARN, mod, __VA_ARGS__)
#define mdm_error(mod, ...) mdm_log(MDM_LOG_ERROR, mod, __VA_ARGS__)

#endif
