/* Logging: levels filter, plain and JSON line formats, JSON escaping. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/log.h"

/* Runs fn with stderr redirected into buf. */
static void capture(void (*fn)(void), char *buf, size_t len)
{
    int fds[2];
    if (pipe(fds) != 0)
        return;
    int saved = dup(2);
    dup2(fds[1], 2);
    fn();
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    ssize_t n = read(fds[0], buf, len - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fds[0]);
}

static void emit(void)
{
    mdm_debug("test", "hidden %d", 1);
    mdm_info("test", "shown \"quoted\" %d\n", 2);
    mdm_error("store", "bad");
}

int main(void)
{
    char out[4096];
    mdm_log_setup(MDM_LOG_INFO, false);
    capture(emit, out, sizeof(out));
    CHECK(strstr(out, "hidden") == NULL);
    CHECK(strstr(out, " info  test: shown \"quoted\" 2") != NULL);
    CHECK(strstr(out, " error store: bad\n") != NULL);

    mdm_log_setup(MDM_LOG_DEBUG, true);
    capture(emit, out, sizeof(out));
    CHECK(strstr(out, "\"level\":\"debug\",\"module\":\"test\",\"msg\":\"hidden 1\"}\n") != NULL);
    CHECK(strstr(out, "\"msg\":\"shown \\\"quoted\\\" 2\\u000a\"}") != NULL);
    CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);

    CHECK_EQ_INT(mdm_log_level_parse("warn"), MDM_LOG_WARN);
    CHECK_EQ_INT(mdm_log_level_parse("loud"), -1);
    return check_finish("log");
}
