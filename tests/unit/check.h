/*
 * Tiny test helpers shared by every test program.
 *
 * CHECK(cond) prints file:line and the failed expression and counts a failure; tests keep
 * going so one run shows every broken case. check_finish() prints the plain summary line
 * "N passed, N failed" and returns the exit code meson reads (0 pass, 1 fail). Exit code 77
 * means skip (for example io_uring forbidden by a seccomp filter).
 */
#ifndef MDM_TEST_CHECK_H
#define MDM_TEST_CHECK_H

#include <stdio.h>

extern int check_passed;
extern int check_failed;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (cond) {                                                                        \
            check_passed++;                                                                \
        } else {                                                                           \
            check_failed++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                  \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long _a = (long long)(a), _b = (long long)(b);                                \
        if (_a == _b) {                                                                    \
            check_passed++;                                                                \
        } else {                                                                           \
            check_failed++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,    \
                    __LINE__, #a, #b, _a, _b);                                             \
        }                                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *_a = (a), *_b = (b);                                                   \
        if (_a && _b && strcmp(_a, _b) == 0) {                                             \
            check_passed++;                                                                \
        } else {                                                                           \
            check_failed++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
                    __LINE__, #a, #b, _a ? _a : "(null)", _b ? _b : "(null)");             \
        }                                                                                  \
    } while (0)

/** Prints "<name>: N passed, N failed" and returns the process exit code. */
int check_finish(const char *name);

/** Creates a fresh temporary directory under $TMPDIR (or /tmp); returns a static path. */
const char *check_tmpdir(const char *tag);

/** "<dir>/<name>" in one of 8 rotating static buffers (so a call can take several). */
const char *check_path(const char *dir, const char *name);

/** Runs the formatted shell command with its output discarded; returns its exit status, or
 * -1 when it did not exit normally. */
int check_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
