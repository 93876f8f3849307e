/*
 * Logging. Each line is formatted into a stack buffer and written with one write(2) so
 * lines from different shard threads never interleave.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum mdm_log_level min_level = MDM_LOG_INFO;
static bool json_lines;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mdm_log_setup(enum mdm_log_level level, bool json)
{
    min_level = level;
    json_lines = json;
}

int mdm_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

/* Appends s to out as JSON string content (without quotes). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

void mdm_log(enum mdm_log_level level, const char *module, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[2560];
    int n;
    if (json_lines) {
        char esc[2048];
        json_escape(esc, sizeof(esc), msg);
        n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"%s\"}\n",
                     when, level_names[level], module, esc);
    } else {
        n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", when, level_names[level], module, msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
