/* pactfs-admin audit: printing what a query selected, as a table, JSON
 * lines or CSV, and the reports built on it (per-account summary, denied
 * accesses).  The selection itself is src/audit_query.h. */
#ifndef PACTFS_AUDIT_REPORT_H
#define PACTFS_AUDIT_REPORT_H

#include <stddef.h>
#include <stdio.h>

struct json_object;

enum audit_out { AUDIT_OUT_TABLE, AUDIT_OUT_JSON, AUDIT_OUT_CSV };
enum audit_report { AUDIT_REPORT_EVENTS, AUDIT_REPORT_SUMMARY, AUDIT_REPORT_DENIED };

/* "table", "json" or "csv": 0, or -1. */
int audit_out_parse(const char *s, enum audit_out *out);

/* "query" (the events), "summary" or "denied": 0, or -1. */
int audit_report_parse(const char *s, enum audit_report *kind);

/* Is the event a denied access: result denied, or a failed unlock? */
int audit_report_is_denial(struct json_object *ev);

/* Sort events by time (stable), then print the report.  0 or -errno. */
int audit_report_print(FILE *out, enum audit_out fmt, enum audit_report kind,
                       struct json_object **evs, size_t n);

#endif
