/*
 * `mdmd serve DIR`: loads the instance, opens storage, starts the shards with the device and
 * admin listeners, and runs until SIGINT/SIGTERM, then drains and exits cleanly.
 */
#ifndef MDM_ACTORS_SERVE_H
#define MDM_ACTORS_SERVE_H

#include <stdio.h>

/**
 * Runs the server. overrides are "section.key=value" strings applied over the config file.
 * Prints the URLs and a "listening device=<port> admin=<port>" line to out once ready.
 * Returns the process exit code (0 after a clean shutdown).
 */
int mdm_serve(const char *dir, const char *const *overrides, size_t n_overrides, FILE *out);

#endif
