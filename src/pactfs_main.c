/* pactfs: mount and unmount a vault.  The work is in vault.c (unlock) and
 * fs_*.c (FUSE); this file is the command line, the password, the
 * daemonizing and the exit codes. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit_ship.h"
#include "cli.h"
#include "status_show.h"
#include "crypto.h"
#include "error.h"
#include "exitcodes.h"
#include "fs.h"
#include "log.h"
#include "mount_peers.h"
#include "secmem.h"
#include "vault.h"

#define PROG "pactfs"
#define PID_DIR "/run/pactfs"

static void usage(FILE *out)
{
    fprintf(out,
"Usage: pactfs mount [OPTIONS] VAULT_DIR MOUNTPOINT\n"
"       pactfs mount [OPTIONS] --config FILE MOUNTPOINT\n"
"       pactfs umount MOUNTPOINT\n"
"       pactfs status [--json] [MOUNTPOINT]\n"
"\n"
"Mount a pactfs vault: its contract folders appear under MOUNTPOINT as plain\n"
"files; everything stored is encrypted and dispersed across the endpoints.\n"
"\n"
"Mount options:\n"
"  --config FILE     the vault configuration (default VAULT_DIR/pactfs.conf)\n"
"  --account NAME    the account to unlock (default: vault.default_account)\n"
"  --passfile FILE   read the password from the first line of FILE\n"
"  --extpass CMD     read the password from the output of CMD\n"
"  --read-only, -r   mount read-only\n"
"  --allow-other     let other local users use the mount (needs root)\n"
"  --accept-metadata-rollback\n"
"                    mount although the metadata is older than the newest\n"
"                    signed vault head or file head seen (exit 17 otherwise);\n"
"                    audited, and the older head becomes the anchor\n"
"  -f                stay in the foreground (logs go to stderr)\n"
"  -d                FUSE debug output and the daemon's debug lines (implies -f)\n"
"  --help, --version\n"
"\n"
"Unmount with `pactfs umount MOUNTPOINT` or `fusermount3 -u MOUNTPOINT`;\n"
"either flushes all data first.\n"
"\n"
"status shows each running mount (or MOUNTPOINT's): account, endpoints with\n"
"their state and latency, write-back backlog, degraded writes and the repair\n"
"queue, audit spool and shipping lag, the last error; --json prints the\n"
"daemon's status file as is.  Exit codes: see pactfs(1).\n");
}

struct mount_args {
    const char *conf_path;
    const char *mountpoint;
    const char *account;
    const char *passfile;
    const char *extpass;
    int foreground, debug, read_only, allow_other, accept_rollback;
};

static char conf_buf[PATH_MAX];
static char conf_abs[PATH_MAX], mountpoint_abs[PATH_MAX];

static int parse_mount_args(int argc, char **argv, struct mount_args *a)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "account", required_argument, NULL, 'a' },
        { "passfile", required_argument, NULL, 'p' },
        { "extpass", required_argument, NULL, 'e' },
        { "read-only", no_argument, NULL, 'r' },
        { "allow-other", no_argument, NULL, 'o' },
        { "accept-metadata-rollback", no_argument, NULL, 'R' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "fdrh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->conf_path = optarg; break;
        case 'a': a->account = optarg; break;
        case 'p': a->passfile = optarg; break;
        case 'e': a->extpass = optarg; break;
        case 'r': a->read_only = 1; break;
        case 'o': a->allow_other = 1; break;
        case 'R': a->accept_rollback = 1; break;
        case 'f': a->foreground = 1; break;
        case 'd': a->debug = a->foreground = 1; break;
        case 'h': usage(stdout); exit(EXIT_OK);
        default: usage(stderr); return -1;
        }
    }
    if (a->passfile && a->extpass) {
        log_error("give either --passfile or --extpass, not both");
        return -1;
    }
    if (!a->conf_path) {
        if (argc - optind != 2) {
            usage(stderr);
            return -1;
        }
        snprintf(conf_buf, sizeof conf_buf, "%s/pactfs.conf", argv[optind]);
        a->conf_path = conf_buf;
        a->mountpoint = argv[optind + 1];
    } else {
        if (argc - optind != 1) {
            usage(stderr);
            return -1;
        }
        a->mountpoint = argv[optind];
    }
    return 0;
}

/* An empty directory that nothing is mounted on yet. */
static int check_mountpoint(const char *mp)
{
    struct stat st, parent;
    char up[PATH_MAX];
    DIR *d;
    struct dirent *e;
    int entries = 0;

    if (stat(mp, &st) < 0) {
        log_error("the mountpoint %s does not exist: create it with mkdir -p %s",
                  mp, mp);
        return EXIT_MOUNTPOINT;
    }
    if (!S_ISDIR(st.st_mode)) {
        log_error("the mountpoint %s is not a directory", mp);
        return EXIT_MOUNTPOINT;
    }
    snprintf(up, sizeof up, "%s/..", mp);
    if (stat(up, &parent) == 0 && parent.st_dev != st.st_dev) {
        log_error("something is already mounted on %s: unmount it first "
                  "(pactfs umount %s)", mp, mp);
        return EXIT_ALREADY_MOUNTED;
    }
    d = opendir(mp);
    if (!d) {
        log_error("cannot open the mountpoint %s: %s", mp, strerror(errno));
        return EXIT_MOUNTPOINT;
    }
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            entries++;
    closedir(d);
    if (entries) {
        log_error("the mountpoint %s is not empty: mount on an empty directory "
                  "(files there would be hidden)", mp);
        return EXIT_MOUNTPOINT;
    }
    return EXIT_OK;
}

/* Join the other mounts of this vault on this machine (mount_peers.h):
 * one mount per mountpoint, none beside a repair. */
static int join_peers(const struct mount_args *a, struct mount_peers **out)
{
    int rc = mount_peers_join(a->conf_path, a->mountpoint, out);

    if (rc == 0)
        return EXIT_OK;
    log_error("%s", pfs_err_msg());
    return rc == -EBUSY ? EXIT_ALREADY_MOUNTED : EXIT_STORE;
}

/* The runtime directory: /run/pactfs for root, else
 * $XDG_RUNTIME_DIR/pactfs (/run/user/UID/pactfs). */
static void runtime_dir(char *out, size_t n)
{
    /* (callers leave room for a file name after it) */
    const char *xdg = getenv("XDG_RUNTIME_DIR");

    if (getuid() != 0 && xdg && *xdg == '/')
        snprintf(out, n, "%s/pactfs", xdg);
    else
        snprintf(out, n, PID_DIR);
}

/* RUNTIME_DIR/<mountpoint id><suffix> */
static void runtime_file(const char *mountpoint, const char *suffix, char *out, size_t n)
{
    char dir[PATH_MAX], id[MOUNTPOINT_ID_LEN + 1];

    mountpoint_id(mountpoint, id);
    runtime_dir(dir, sizeof dir - 64);
    if (snprintf(out, n, "%s/%s%.16s", dir, id, suffix) >= (int)n)
        out[0] = '\0';
}

/* The daemon's pid, by mountpoint, so `pactfs umount` can wait for the
 * final flush. */
static void pidfile_path(const char *mountpoint, char *out, size_t n)
{
    runtime_file(mountpoint, ".pid", out, n);
}

static void pidfile_write(const char *mountpoint)
{
    char path[PATH_MAX];
    FILE *fp;

    runtime_dir(path, sizeof path);
    mkdir(path, 0755);   /* status files are readable; they hold no secret */
    pidfile_path(mountpoint, path, sizeof path);
    fp = fopen(path, "we");
    if (fp) {
        fprintf(fp, "%ld\n", (long)getpid());
        fclose(fp);
    }
}

static void pidfile_remove(const char *mountpoint)
{
    char path[PATH_MAX];

    pidfile_path(mountpoint, path, sizeof path);
    unlink(path);
    runtime_file(mountpoint, STATUS_SUFFIX, path, sizeof path);
    unlink(path);
    runtime_file(mountpoint, METRICS_SUFFIX, path, sizeof path);
    unlink(path);
}

/* ---- daemonizing ---- */

struct ready_relay {
    int from_fs;     /* the FUSE layer writes one byte here when live */
    int to_parent;   /* the waiting parent reads one byte from here */
};

/* Once the mount is live: detach from the terminal, send the log to syslog,
 * and release the parent, which then exits 0. */
static void *relay_ready(void *arg)
{
    struct ready_relay *r = arg;
    char b;
    int devnull;

    if (read(r->from_fs, &b, 1) != 1) {
        close(r->from_fs);
        return NULL;
    }
    close(r->from_fs);
    devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }
    if (pfs_log_to_syslog() < 0)
        log_warning("cannot send stderr to syslog: messages not written through the log "
                    "are lost from now on");
    b = 0;
    if (write(r->to_parent, &b, 1) != 1) {
        /* The parent is gone; nothing left to tell. */
    }
    close(r->to_parent);
    return NULL;
}

/* Parent side of daemonizing: wait for "live" or for the child's exit. */
static int wait_for_child(pid_t child, int from_child)
{
    char b;
    ssize_t n;
    int status;

    do
        n = read(from_child, &b, 1);
    while (n < 0 && errno == EINTR);
    if (n == 1)
        return EXIT_OK;
    if (waitpid(child, &status, 0) < 0)
        return EXIT_FAILURE_OTHER;
    if (WIFEXITED(status))
        return WEXITSTATUS(status) ? WEXITSTATUS(status) : EXIT_FAILURE_OTHER;
    log_error("the daemon died (signal %d) before the mount was ready",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return EXIT_FAILURE_OTHER;
}

/* What went wrong, from pfs_err_msg() or the errno. */
static void report(int rc)
{
    const char *msg = pfs_err_msg();

    log_error("%s", *msg ? msg : strerror(-rc));
}

/* Open the vault (stages 1 and 2 of vault.h: storage, key provider) and
 * unlock the account (stage 3): an exit code. */
static int open_and_unlock(const struct mount_args *a, const char *password, struct vault **out)
{
    const char *account;
    int rc = vault_open(a->conf_path, out);

    if (rc < 0) {
        report(rc);
        return cli_open_exit_code(rc);
    }
    account = a->account ? a->account : (*out)->conf.default_account;
    if (!account) {
        log_error("no account given and %s sets no vault.default_account: "
                  "use --account NAME", a->conf_path);
        return EXIT_USAGE;
    }
    (*out)->accept_rollback = a->accept_rollback;
    rc = vault_unlock(*out, account, password);
    if (rc < 0) {
        report(rc);
        if ((*out)->audit_failed)
            return EXIT_AUDIT;
        return rc == -EINVAL ? EXIT_CONFIG : cli_exit_code_for(rc);
    }
    rc = vault_check_mount_role(*out, a->mountpoint);
    if (rc < 0) {
        report(rc);
        return rc == -EACCES ? EXIT_ACCESS : EXIT_AUDIT;
    }
    /* The signed file head: no older than its anchor (exit 17), verified
     * (exit 14); its floors are checked when files open. */
    rc = vault_file_head_open(*out);
    if (rc < 0) {
        cli_report(rc);
        return cli_exit_code_for(rc);
    }
    if ((*out)->nfolders == 0)
        log_warning("account \"%s\" holds no folder envelope yet; the mount will be empty "
                    "until a data administrator grants one", account);
    return EXIT_OK;
}

/* Lock the plaintext pool to the cache budget (cut to RLIMIT_MEMLOCK) and
 * say in the mount log what is locked and what is not. */
static void memory_report(const struct vault *v)
{
    enum { READ_SLACK_MIB = 16 };   /* read replies and chunks in flight */
    size_t cache = v->conf.cache_mib ? v->conf.cache_mib : 256;
    size_t dirty = v->conf.dirty_mib ? v->conf.dirty_mib : 256;
    char line[1024];

    secmem_plain_budget((cache + dirty + READ_SLACK_MIB) << 20);
    secmem_describe(line, sizeof line);
    log_info("%s", line);
}

/* Open, unlock and serve.  Runs in the daemon (or the foreground).  The
 * password is wiped and freed as soon as the account is unlocked. */
static int serve(const struct mount_args *a, char **password, int ready_fd)
{
    struct vault *v = NULL;
    struct fs_options fo = { 0 };
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_ship *ship = NULL;
    enum { SHIP_DRAIN_MS = 5000 };      /* bound on sending the rest at unmount */
    struct mount_peers *peers = NULL;
    int rc, code;
    char status_path[PATH_MAX], metrics_path[PATH_MAX];

    code = join_peers(a, &peers);
    if (code != EXIT_OK)
        return code;
    /* Keys are always locked: here, in the process that keeps them (memory
     * locks do not survive fork), and refuse to start if that fails. */
    if (secmem_relock(*password, strlen(*password) + 1) < 0
        || secmem_init_openssl_heap() < 0) {
        log_error("%s", pfs_err_msg());
        secmem_free_str(*password);
        *password = NULL;
        mount_peers_leave(peers);
        return EXIT_CONFIG;
    }
    code = open_and_unlock(a, *password, &v);
    secmem_free_str(*password);
    *password = NULL;
    secmem_clear_registers();
    if (code != EXIT_OK)
        goto out;
    if (v->conf.audit_url) {
        /* The spool stays the record; shipping runs beside it and retries. */
        struct audit_ship_opts so = { .spool_path = v->conf.audit_spool,
                                      .url = v->conf.audit_url, .tls = &v->conf.audit_tls };
        rc = audit_ship_start(&so, &ship);
        if (rc < 0) {
            report(rc);
            code = EXIT_CONFIG;
            goto out;
        }
    }
    memory_report(v);
    fo.foreground = a->foreground;
    fo.debug = a->debug;
    fo.read_only = a->read_only;
    fo.allow_other = a->allow_other;
    fo.ready_fd = ready_fd;
    fo.peers = peers;
    fo.mountpoint = a->mountpoint;
    runtime_file(a->mountpoint, STATUS_SUFFIX, status_path, sizeof status_path);
    runtime_file(a->mountpoint, METRICS_SUFFIX, metrics_path, sizeof metrics_path);
    fo.status_path = status_path;
    fo.metrics_path = metrics_path;
    fo.ship = ship;
    /* Fail closed: no mount that the audit trail does not know about. */
    rc = audit_event(v->audit, &who, "mount", a->mountpoint, 0, 0);
    if (rc < 0) {
        log_error("cannot write the audit spool %s (%s): not mounting",
                  v->conf.audit_spool, strerror(-rc));
        code = EXIT_AUDIT;
        goto out;
    }
    pidfile_write(a->mountpoint);
    rc = fs_mount_and_serve(v, a->mountpoint, &fo);
    audit_event(v->audit, &who, "unmount", a->mountpoint, rc, 0);
    pidfile_remove(a->mountpoint);
    if (rc < 0) {
        report(rc);
        code = EXIT_FUSE;
    }
out:
    vault_close(v);   /* writes the closing checkpoint: ship it too */
    if (ship && audit_ship_stop(ship, SHIP_DRAIN_MS) < 0)
        log_error("%s", pfs_err_msg());
    mount_peers_leave(peers);
    return code;
}

static int cmd_mount(int argc, char **argv)
{
    struct mount_args a = { 0 };
    char *password;
    int code, to_parent[2], relay_pipe[2];
    pid_t child;
    struct stat st;

    if (parse_mount_args(argc, argv, &a) < 0)
        return EXIT_USAGE;
    pfs_log_init(PROG, a.debug ? PFS_LOG_DEBUG : PFS_LOG_INFO);
    if (stat(a.conf_path, &st) < 0) {
        log_error("no vault configuration at %s (%s): give the vault directory "
                  "made by `pactfs-admin init`, or --config FILE", a.conf_path, strerror(errno));
        return EXIT_CONFIG;
    }
    code = check_mountpoint(a.mountpoint);
    if (code != EXIT_OK)
        return code;
    /* The daemon chdirs to "/", so relative paths would name other files. */
    if (!realpath(a.conf_path, conf_abs) || !realpath(a.mountpoint, mountpoint_abs)) {
        log_error("cannot resolve %s or %s: %s", a.conf_path, a.mountpoint,
                  strerror(errno));
        return EXIT_CONFIG;
    }
    a.conf_path = conf_abs;
    a.mountpoint = mountpoint_abs;
    secmem_harden_process();
    password = cli_read_password(a.passfile, a.extpass, "Password: ", 0);
    secmem_clear_registers();   /* before any thread inherits them */
    if (!password) {
        log_error("%s", pfs_err_msg());
        return EXIT_PASSWORD_INPUT;
    }
    if (a.foreground) {
        code = serve(&a, &password, -1);
        secmem_free_str(password);
        return code;
    }
    if (pipe(to_parent) < 0 || pipe(relay_pipe) < 0) {
        secmem_free_str(password);
        log_error("pipe: %s", strerror(errno));
        return EXIT_FAILURE_OTHER;
    }
    child = fork();
    if (child < 0) {
        secmem_free_str(password);
        log_error("fork: %s", strerror(errno));
        return EXIT_FAILURE_OTHER;
    }
    if (child > 0) {
        secmem_free_str(password);
        close(to_parent[1]);
        close(relay_pipe[0]);
        close(relay_pipe[1]);
        return wait_for_child(child, to_parent[0]);
    }
    /* The daemon. */
    close(to_parent[0]);
    setsid();
    if (chdir("/") < 0) {
        /* Keep going: the paths we use are absolute after conf_load. */
    }
    {
        static struct ready_relay r;
        pthread_t t;

        r.from_fs = relay_pipe[0];
        r.to_parent = to_parent[1];
        if (pthread_create(&t, NULL, relay_ready, &r) != 0) {
            secmem_free_str(password);
            return EXIT_FAILURE_OTHER;
        }
        /* The FUSE layer gets its own copy of the write end (it may close
         * it); ours is closed below so the relay sees EOF if the mount
         * never became live.  The relay is not joined: a copy the FUSE
         * layer kept open must not hang the exit. */
        pthread_detach(t);
        code = serve(&a, &password, dup(relay_pipe[1]));
        secmem_free_str(password);
        close(relay_pipe[1]);
    }
    return code;
}

static int cmd_umount(int argc, char **argv)
{
    char path[PATH_MAX];
    FILE *fp;
    long pid = 0;
    pid_t child;
    int status;

    if (argc != 2) {
        fprintf(stderr, "Usage: pactfs umount MOUNTPOINT\n");
        return EXIT_USAGE;
    }
    pidfile_path(argv[1], path, sizeof path);
    fp = fopen(path, "re");
    if (fp) {
        if (fscanf(fp, "%ld", &pid) != 1)
            pid = 0;
        fclose(fp);
    }
    child = fork();
    if (child == 0) {
        execlp("fusermount3", "fusermount3", "-u", argv[1], (char *)NULL);
        log_error("cannot run fusermount3 (install the fuse3 package): %s", strerror(errno));
        _exit(127);
    }
    if (child < 0 || waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        log_error("unmounting %s failed (is it mounted? is a file still open "
                  "there?)", argv[1]);
        return EXIT_FUSE;
    }
    /* Wait (bounded) for the daemon to finish its final flush. */
    for (int i = 0; pid > 0 && i < 600 && kill((pid_t)pid, 0) == 0; i++)
        usleep(100000);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pactfs %s\n", PACKAGE_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "mount"))
        return cmd_mount(argc - 1, argv + 1);
    if (!strcmp(argv[1], "umount") || !strcmp(argv[1], "unmount"))
        return cmd_umount(argc - 1, argv + 1);
    if (!strcmp(argv[1], "status")) {
        char dir[PATH_MAX], one[PATH_MAX];
        int json = argc > 2 && !strcmp(argv[2], "--json");
        const char *mnt = argc > 2 + json ? argv[2 + json] : NULL;

        if (argc > 3 + json || (argc > 2 && argv[argc - 1][0] == '-' &&
                                strcmp(argv[argc - 1], "--json"))) {
            fprintf(stderr, "Usage: pactfs status [--json] [MOUNTPOINT]\n");
            return EXIT_USAGE;
        }
        runtime_dir(dir, sizeof dir);
        if (mnt)
            runtime_file(mnt, STATUS_SUFFIX, one, sizeof one);
        return status_show(dir, mnt ? one : NULL, mnt, json);
    }
    log_error("unknown command \"%s\"; try pactfs --help", argv[1]);
    return EXIT_USAGE;
}
