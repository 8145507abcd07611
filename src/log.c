/* The programs' log (log.h). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_prog = "pactfs";
static enum pfs_log_level log_max = PFS_LOG_INFO;
static int log_syslog;     /* set once by pfs_log_to_syslog (atomic: threads are logging) */
static int log_stamps;
static int log_progress_open;   /* a progress line is on the terminal, unterminated */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct {
    const char *word;      /* after "PROG: " */
    int priority;
} levels[] = {
    [PFS_LOG_ERROR] = { "error: ", LOG_ERR },
    [PFS_LOG_WARNING] = { "warning: ", LOG_WARNING },
    [PFS_LOG_INFO] = { "", LOG_NOTICE },
    [PFS_LOG_DEBUG] = { "debug: ", LOG_DEBUG },
};

void pfs_log_init(const char *prog, enum pfs_log_level max)
{
    if (prog)
        log_prog = prog;
    log_max = max;
}

void pfs_log_timestamps(int on)
{
    log_stamps = on;
}

void pfs_log_progress(const char *fmt, ...)
{
    va_list ap;

    if (__atomic_load_n(&log_syslog, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&log_lock);
    fputc('\r', stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
    log_progress_open = 1;
    pthread_mutex_unlock(&log_lock);
}

void pfs_log_progress_done(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_progress_open)
        fputc('\n', stderr);
    log_progress_open = 0;
    pthread_mutex_unlock(&log_lock);
}

int pfs_log_enabled(enum pfs_log_level level)
{
    return level <= log_max;
}

void pfs_log(enum pfs_log_level level, const char *fmt, ...)
{
    char msg[2048], stamp[32] = "";
    va_list ap;
    int saved = errno;

    if (!pfs_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (__atomic_load_n(&log_syslog, __ATOMIC_ACQUIRE)) {
        syslog(levels[level].priority, "%s%s", levels[level].word, msg);
        errno = saved;
        return;
    }
    if (log_stamps) {
        time_t now = time(NULL);
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    }
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s%s%s: %s%s\n", log_progress_open ? "\n" : "", stamp, log_prog,
            levels[level].word, msg);
    log_progress_open = 0;
    pthread_mutex_unlock(&log_lock);
    errno = saved;
}

/* ---- stderr into syslog ---- */

/* The priority of a line written to stderr by code that does not say its
 * level, from what it says. */
static int guess_priority(const char *line)
{
    static const char *const err[] = { "failed", "cannot", "error", "lost", "corrupt",
                                       "damage", "refused", NULL };
    static const char *const warn[] = { "warning", "degraded", "still miss", "no longer",
                                        NULL };

    for (int i = 0; err[i]; i++)
        if (strcasestr(line, err[i]))
            return LOG_ERR;
    for (int i = 0; warn[i]; i++)
        if (strcasestr(line, warn[i]))
            return LOG_WARNING;
    return LOG_NOTICE;
}

static void *stderr_to_syslog(void *arg)
{
    FILE *in = fdopen((int)(intptr_t)arg, "r");
    char line[1024];

    if (!in)
        return NULL;
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = '\0';
        syslog(guess_priority(line), "%s", line);
    }
    fclose(in);
    return NULL;
}

int pfs_log_to_syslog(void)
{
    pthread_t t;
    int p[2];

    openlog(log_prog, LOG_PID, LOG_DAEMON);
    __atomic_store_n(&log_syslog, 1, __ATOMIC_RELEASE);
    if (pipe(p) < 0)
        return -errno;
    if (pthread_create(&t, NULL, stderr_to_syslog, (void *)(intptr_t)p[0]) != 0) {
        close(p[0]);
        close(p[1]);
        return -EAGAIN;
    }
    pthread_detach(t);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    return 0;
}
