"""A throwaway PostgreSQL 15 cluster that speaks TLS on 127.0.0.1, for the
pactfs integration tests (tests/integration/test_pg.py) and for trying the
PostgreSQL metadata backend by hand.

    from pg_tls import PgTls
    pg = PgTls.start()            # CA, server cert, initdb, pg_ctl start
    db = pg.create_database()     # an empty database owned by the pactfs role
    conninfo = pg.conninfo(db)    # host=127.0.0.1 ... sslmode=verify-full
    pg.stop()                     # pg_ctl -m immediate stop, folder removed

By hand (as root):  python3 tests/pg/pg_tls.py   (prints a conninfo, stops
the cluster when you press Enter).

Everything lives in one mktemp folder.  Root cannot run postgres, so every
server-side command runs through `runuser -u postgres`; the superuser is
reached over the unix socket in that folder (peer authentication), while
TCP accepts only TLS with SCRAM passwords (hostssl in pg_hba.conf), so a
client that forgets TLS is turned away by the server too.  Every wait has a
time limit; a failure raises PgTlsError with the command and its output.
"""
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PG_USER = "postgres"
ROLE = "pactfs"
CMD_TIMEOUT_S = 60
START_TIMEOUT_S = 30


class PgTlsError(RuntimeError):
    pass


def pg_bin_dir():
    """Newest /usr/lib/postgresql/N/bin (Debian's layout)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    if not dirs:
        raise PgTlsError("no PostgreSQL server found under /usr/lib/postgresql: "
                         "apt-get install postgresql")
    return dirs[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, timeout=CMD_TIMEOUT_S, input_bytes=None, as_postgres=False):
    """Run a command with a time limit; raise PgTlsError if it fails."""
    if as_postgres:
        argv = ["runuser", "-u", PG_USER, "--"] + list(argv)
    try:
        p = subprocess.run(argv, input=input_bytes, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PgTlsError("timed out after %ss: %s" % (timeout, " ".join(argv))) from e
    if p.returncode != 0:
        raise PgTlsError("%s -> exit %d\n%s%s" % (" ".join(argv), p.returncode,
                                                  p.stdout.decode(errors="replace"),
                                                  p.stderr.decode(errors="replace")))
    return p.stdout


def write_private(path, text, owner_uid=None, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    if owner_uid is not None:
        os.chown(path, owner_uid, -1)


# ---------------------------------------------------------------- test PKI

def make_ca(pki, name):
    """An EC P-256 CA: PKI/NAME-ca.pem and its key."""
    key, crt = os.path.join(pki, name + "-ca.key"), os.path.join(pki, name + "-ca.pem")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "2",
         "-subj", "/CN=pactfs test CA %s" % name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return crt, key


def make_server_cert(pki, name, ca_crt, ca_key):
    """A server certificate for localhost / 127.0.0.1 signed by the CA."""
    key = os.path.join(pki, name + ".key")
    csr = os.path.join(pki, name + ".csr")
    crt = os.path.join(pki, name + ".pem")
    ext = os.path.join(pki, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext])
    return crt, key


# ---------------------------------------------------------------- the cluster

class PgTls:
    """One running cluster.  Attributes: dir, port, ca_file (the CA that
    signed the server's certificate), foreign_ca_file (an unrelated CA),
    role, role_password, passfile (libpq password file, 0600)."""

    def __init__(self):
        self.bin = pg_bin_dir()
        self.pg_uid = pwd.getpwnam(PG_USER).pw_uid
        self.dir = tempfile.mkdtemp(prefix="pactfs-pgtls.")
        os.chmod(self.dir, 0o755)          # clients (root) read the CA, postgres writes
        os.chown(self.dir, self.pg_uid, -1)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.pki = os.path.join(self.dir, "pki")
        os.mkdir(self.pki, 0o755)
        self.port = free_port()
        self.role = ROLE
        self.role_password = None
        self.passfile = os.path.join(self.dir, "pgpass")
        self.running = False
        self.n_databases = 0

    @classmethod
    def start(cls):
        """Make the PKI, initdb, start the server, create the pactfs role.
        On any failure the folder is removed and PgTlsError raised."""
        pg = cls()
        try:
            pg._make_pki()
            pg._initdb()
            pg.start_server()
            pg._create_role()
        except BaseException:
            pg.stop()
            raise
        return pg

    def _make_pki(self):
        self.ca_file, ca_key = make_ca(self.pki, "test")
        self.foreign_ca_file, _ = make_ca(self.pki, "foreign")
        crt, key = make_server_cert(self.pki, "server", self.ca_file, ca_key)
        # The server wants its own copy: owned by postgres, mode 0600.
        self.server_cert = os.path.join(self.dir, "server.pem")
        self.server_key = os.path.join(self.dir, "server.key")
        shutil.copyfile(crt, self.server_cert)
        shutil.copyfile(key, self.server_key)
        os.chown(self.server_cert, self.pg_uid, -1)
        os.chown(self.server_key, self.pg_uid, -1)
        os.chmod(self.server_key, 0o600)

    def _initdb(self):
        pwfile = os.path.join(self.dir, "superuser.pw")
        write_private(pwfile, secrets.token_urlsafe(24) + "\n", owner_uid=self.pg_uid)
        try:
            run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", PG_USER,
                 "--pwfile", pwfile, "--auth-local=peer", "--auth-host=scram-sha-256",
                 "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], as_postgres=True)
        finally:
            os.unlink(pwfile)
        # TCP only with TLS (hostssl); the superuser only over the socket.
        hba = ("local all %s peer\n"
               "hostssl all all 127.0.0.1/32 scram-sha-256\n" % PG_USER)
        write_private(os.path.join(self.data, "pg_hba.conf"), hba, owner_uid=self.pg_uid)

    def start_server(self):
        """Start the (initialised) server; returns once it accepts connections."""
        opts = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c ssl=on -c ssl_cert_file=%s "
                "-c ssl_key_file=%s -c ssl_min_protocol_version=TLSv1.2 -c fsync=off"
                % (self.port, self.dir, self.server_cert, self.server_key))
        try:
            run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w",
                 "-t", str(START_TIMEOUT_S), "-o", opts, "start"],
                timeout=START_TIMEOUT_S + 10, as_postgres=True)
        except PgTlsError as e:
            raise PgTlsError("%s\nserver log:\n%s" % (e, self.server_log())) from e
        self.running = True

    def _create_role(self):
        self.role_password = self.create_login_role(self.role, self.passfile)

    def create_login_role(self, name, passfile):
        """A LOGIN role with a random password, written to passfile in
        libpq's format (host:port:database:user:password, mode 0600: libpq
        ignores a file that group or others can read).  Returns the password."""
        password = secrets.token_urlsafe(24)
        self.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (name, password))
        write_private(passfile, "127.0.0.1:%d:*:%s:%s\n" % (self.port, name, password))
        return password

    # ------------------------------------------------------------ use

    def psql(self, sql, db="postgres"):
        """Run SQL as the superuser over the unix socket; returns stdout."""
        return run([os.path.join(self.bin, "psql"), "-h", self.dir, "-p", str(self.port),
                    "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                   as_postgres=True).decode()

    def create_database(self, name=None):
        """An empty database owned by the pactfs role."""
        self.n_databases += 1
        name = name or "pactfs_%d_%s" % (self.n_databases, secrets.token_hex(3))
        self.psql('CREATE DATABASE "%s" OWNER %s' % (name, self.role))
        # PostgreSQL 15: only the owner may create in schema public.
        self.psql("REVOKE ALL ON DATABASE \"%s\" FROM PUBLIC" % name)
        return name

    def conninfo(self, db, ca_file=None, sslmode="verify-full", role=None, passfile=None):
        """libpq conninfo (default: the pactfs role), password from a passfile."""
        parts = ["host=127.0.0.1", "port=%d" % self.port, "dbname=%s" % db,
                 "user=%s" % (role or self.role), "passfile=%s" % (passfile or self.passfile),
                 "connect_timeout=10"]
        if sslmode:
            parts += ["sslmode=%s" % sslmode, "sslrootcert=%s" % (ca_file or self.ca_file)]
        return " ".join(parts)

    def dump(self, db):
        """pg_dump (plain SQL, bytea as hex) of one database, as bytes."""
        return run([os.path.join(self.bin, "pg_dump"), "-h", self.dir, "-p", str(self.port),
                    "-U", PG_USER, "-d", db], as_postgres=True)

    def server_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no server log)"

    def stop_server(self):
        """Stop the server but keep its folder (an outage a test can end
        with start_server)."""
        if self.running:
            self.running = False
            run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate",
                 "-w", "-t", "30", "stop"], timeout=40, as_postgres=True)

    def stop(self):
        """Stop at once (no checkpoint needed for a throwaway cluster) and
        remove the folder."""
        if self.running:
            self.running = False
            try:
                run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate",
                     "-w", "-t", "30", "stop"], timeout=40, as_postgres=True)
            except PgTlsError:
                self._kill_postmaster()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_postmaster(self):
        """pg_ctl failed: SIGKILL the postmaster named in its pid file."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, 9)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
                time.sleep(0.05)
        except (OSError, ValueError):
            pass


def main():
    pg = PgTls.start()
    try:
        db = pg.create_database("pactfs")
        print("PostgreSQL with TLS on 127.0.0.1:%d (folder %s)" % (pg.port, pg.dir))
        print("conninfo: %s" % pg.conninfo(db))
        print("try:  pactfs-admin init DIR --postgresql '%s'" % pg.conninfo(db))
        print("press Enter to stop and remove it")
        sys.stdin.readline()
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
