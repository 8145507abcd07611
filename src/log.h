/* The log of every program: one line per message, one prefix format, four
 * levels.  The prefix is the program's name (pfs_log_init), so a library
 * module's message reads "pactfs-admin: warning: ..." in pactfs-admin and
 * "pactfs: warning: ..." in the daemon.
 *
 *   pactfs: error: cannot commit /Contracts/a.pdf: ...
 *   pactfs: warning: repair of 3 chunk(s) failed this pass, ...
 *   pactfs: endpoint 1 (dir:/srv/e1) is back: ...            (info)
 *   pactfs: debug: ...                                       (only with -d)
 *
 * In the foreground lines go to stderr; once the daemon is in the
 * background (pfs_log_to_syslog) they go to syslog (facility daemon) at the
 * level's priority: error LOG_ERR, warning LOG_WARNING, info LOG_NOTICE,
 * debug LOG_DEBUG (journalctl -p warning shows what needs attention).  What
 * other code still writes to stderr follows them there.
 *
 * A message says what happened and what to do; it carries no trailing
 * newline.  Thread-safe: each line is written whole. */
#ifndef PACTFS_LOG_H
#define PACTFS_LOG_H

enum pfs_log_level {
    PFS_LOG_ERROR,
    PFS_LOG_WARNING,
    PFS_LOG_INFO,
    PFS_LOG_DEBUG,
};

/* Who speaks (default "pactfs") and the most detailed level written
 * (default PFS_LOG_INFO; the daemon's -d gives PFS_LOG_DEBUG). */
void pfs_log_init(const char *prog, enum pfs_log_level max);

/* From now on to syslog instead of stderr, and stderr itself (libfuse and
 * code not using this module) into syslog too, at a priority guessed from
 * the line's words.  0, or -errno if stderr could not be redirected (the
 * module's own lines go to syslog all the same). */
int pfs_log_to_syslog(void);

/* Start each stderr line with a UTC time stamp, "2026-12-03T15:40:00Z "
 * (pactfs-keyd and pactfs-auditd with --log-timestamps). */
void pfs_log_timestamps(int on);

/* A progress line ("\rrekey /C [####....] 3/9 files") on a terminal: drawn
 * over itself, no newline.  A log line written while one is shown starts on
 * a line of its own; pfs_log_progress_done ends the shown line. */
void pfs_log_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pfs_log_progress_done(void);

/* Would a message of this level be written? (to skip costly arguments) */
int pfs_log_enabled(enum pfs_log_level level);

void pfs_log(enum pfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) pfs_log(PFS_LOG_ERROR, __VA_ARGS__)
#define log_warning(...) pfs_log(PFS_LOG_WARNING, __VA_ARGS__)
#define log_info(...) pfs_log(PFS_LOG_INFO, __VA_ARGS__)
#define log_debug(...) pfs_log(PFS_LOG_DEBUG, __VA_ARGS__)

#endif
