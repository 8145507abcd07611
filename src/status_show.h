/* `pactfs status`: read the status files the running daemons write
 * (fs_status.c) and print them for a person, or as JSON. */
#ifndef PACTFS_STATUS_SHOW_H
#define PACTFS_STATUS_SHOW_H

#define STATUS_SUFFIX ".status.json"
#define METRICS_SUFFIX ".prom"

/* Every *.status.json in dir, or only the file one (for mountpoint mnt).
 * Returns an exit code: 0 shown, 8 no mount there (or none at all). */
int status_show(const char *dir, const char *one, const char *mnt, int json);

#endif
