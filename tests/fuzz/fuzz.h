/* Shared helpers for the fuzz targets.
 *
 * Each fuzz_X.c defines LLVMFuzzerTestOneInput() over one parser of the core
 * library.  Built with clang -fsanitize=fuzzer it is a libFuzzer binary; in
 * `make check` it is linked with fuzz_driver.c, which replays
 * tests/fuzz/corpus/<name>/ and a bounded, seeded stream of mutations.
 *
 * A target names itself with FUZZ_TARGET(name, iterations) and counts inputs
 * its parser accepted with fuzz_accepted++, so the driver can check that the
 * valid seeds really reach the deep paths.  Broken invariants abort() through
 * FUZZ_ASSERT: to libFuzzer and to the driver that is a crash.
 */
#ifndef PACTFS_FUZZ_H
#define PACTFS_FUZZ_H

#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Defined by each target with FUZZ_TARGET, read by the driver: the name of
 * its corpus directory and how many mutated inputs `make check` runs. */
extern const char *const fuzz_target_name;
extern const unsigned fuzz_mutations;
#define FUZZ_TARGET(name, mutations) \
    const char *const fuzz_target_name = (name); \
    const unsigned fuzz_mutations = (mutations)

/* Inputs the parser accepted (one definition shared by target and driver). */
__attribute__((weak)) unsigned long fuzz_accepted;

#define FUZZ_ASSERT(cond) \
    do { if (!(cond)) { fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", \
                                __FILE__, __LINE__, #cond); abort(); } } while (0)

/* Remove a scratch tree (files and directories, no symlinks followed). */
static inline void fuzz_rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    struct stat st;

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= sizeof p)
            continue;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            fuzz_rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* A fresh private directory under /tmp; exits on failure (setup bug). */
static inline void fuzz_scratch_dir(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "/tmp/pactfs-fuzz-%s-XXXXXX", tag);
    if (!mkdtemp(out)) {
        perror("fuzz: mkdtemp");
        exit(2);
    }
}

/* Replace path with exactly n bytes; 0 or -1. */
static inline int fuzz_write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const uint8_t *p = data;

    if (fd < 0)
        return -1;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return close(fd);
}

/* A fixed RSA-3072 key for the targets that need one (envelopes, audit
 * checkpoint signatures): generating one per run would cost seconds, and the
 * seed corpora were signed with it.  TEST ONLY: it is public. */
static inline EVP_PKEY *fuzz_test_key(void)
{
    static const char pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIIG/AIBADANBgkqhkiG9w0BAQEFAASCBuYwggbiAgEAAoIBgQCPALHzKq4dxQlB\n"
        "jxLPECdft1w3YTNNqv5ysop0/iWuEGw6+BtHex684Mmc6cQydGSOZQnW0HMGJ7fM\n"
        "Sdt3R70zcQ94F9yxix8WYmjVHwFwIA89ss8FpnWqMr4A8jue12HsIQS9Su3MI32X\n"
        "2GztSGT3ugU6lqBKZf+eAVCujp46E55kWWOXuP1zDOq7/Y3XecHZkvPhzcQjVYQf\n"
        "afLr0XKnXicjJhXEnsP88+jaND6Y25vbW1mZoicfYioi1sFg7n4U2GALUAuHIHVM\n"
        "7mK+F42BKHiaOhSfqhPrviH8UH7BtqjcOaKrlf5aovff8uW2VhJwo4UA7ulo7YCG\n"
        "FVGaJct1vsNlrhtYbg88/RWMUwGJLak1cDXUeoaz+NZH7yuAqAsFTG9fsD+qOTjR\n"
        "F+6hWgS6+oPzH8BCr7+RPjwfMkQ25wImFQCC72qm9FleA2m+z3wyNgbBti1zjcd+\n"
        "LueWdSOAnkrZ0oYssdHs3hDxReshNavn/SFBZ1s4vnSsbBbGfhsCAwEAAQKCAYAf\n"
        "FcGY4EA1DG20qIsoI5TLg6oyB5kFWxQwjor2X4CFU+CS+PfFFAhcemiZCV+ysAZj\n"
        "xabb4Tf/sIaNi8h/J0MDeaIpMtawaVN6pC2xlinT28Q0XzgNPF/7fUg8IGvBXYRV\n"
        "td+33h/O7jAQ3+Tdt4zrJK6aS7/QLFfiWtrU9v+CFF2r5pp1kqrVZYtpDfbVTgxL\n"
        "ZVxKS1ZFcANmaLt7c23+38KWK2Mz+GcWB1coh47L34EDr9nMQalLcyVBqXkjvvOq\n"
        "EC987i1s1aPqjbdHCx3tr8cHvW1bgzcOoOBWmUSl6XQo2nOJT1MQV0AVK+he+vCc\n"
        "BogSGNrujB2OfwQ2PVA+w8rDJYJ0NZU9ifNLXs1DaRFwFPmsmcOpv2d+ncMELFmw\n"
        "D6Iir9S12zYiSHwlKKpMT1AQl/cfcU9UJFX6tlLAORtgMGY0cYQQZe63vMmRMhBp\n"
        "uKrVtn/BeL1TbJf82ud7fVuqqeOK9StPbLDwnJtCa95gRAFdysjzTW+1FN47bSEC\n"
        "gcEAxRD23ageJgHU3kxUA4ZB6ZsiRmHyPWHYDjzD2uTS9K7q2EmwImV8WvQtWFuK\n"
        "uBxRbCGmTT6ZsfODqFNF9J3f7/atQp0wlfpVTdddOXYTrmi2eKLHjmyUkdlE6rng\n"
        "B/ArBuqlTPAhA9HoKVYpnK/IyanaSxid/v5CbuBfeSHc24j6FkFzfFmMA1IkvDxP\n"
        "vDmnelfJqZPciylWK+XrWZ5rsdl9472sISlryVhfigkEQjgv+YJ+IZWYRY+8pUou\n"
        "MPETAoHBALnEuTJMWJHoKgroCRvHJtjTAwcIT10h6WLOw9BiFrNwbxX32OEMDtpx\n"
        "gYcyMVvTVSUDLhT2H8gZ3VYArRDtjKPKblpD0KwYxbPKBbbrAZTun41IUE6wrVEv\n"
        "d4XenUWfgp1I1/C3ShIwU8FVwzESeDt3U8wu0Q0FW9PqdOhCjLBLvssBZzOouqEC\n"
        "k44go/Kic++XbVGdKxBG2YtSvE95vEHVT+0IV0fKjz5MJYmj+tXOIwy7zYl64aQb\n"
        "lKdXnXbn2QKBwEsOcAfyXTE6p1nXlnQVMYuI85/89Cde2cxqZmo7lwFskbO5NSWU\n"
        "o618rLyneQkwd+6ITm/DNQSq6+0zckR90OnzeQATIIsu4kiYi0A0ccCOz1jZHspn\n"
        "HpsCNpZ0HxjG54xl2HmaR+jNjPAZihXMedwdHjBV+u9A5gqW2KYpOJZA8IeDfDnT\n"
        "XVlyct1i1zeoedpGD1/QGkLChriHhIEIrpn5bVJNTn7+6LeyOgk37/BMuDD++41N\n"
        "DccIvN/zhe5MEwKBwGNzUqX/w0bRYHiYQhAR7NUVGkDQjRRRzEzuXlwXtwl3PrEn\n"
        "D39jYixFqc9D6rK7D5ESA8CLBvasChc5o201jx48iBlgxrzrQiP/GlITu7QMj3Qm\n"
        "a3/FC/QzkiwjwlR8kYM8dQZUSZ41KxGMpUOHHMDRIBZmVdo/rSplERMqVYEn+8tY\n"
        "Q/Se9tKtu2rSRJLnr2Nr0MVpe51qIJp6v39Yr5Ua6n/+ACPZ6Be00j++ftGpWpA9\n"
        "lkpsc5HUhh+UQyNd+QKBwA6XCNwsHdIOSc853E+jLO35WiUMdFy71CLtHbRjx9hq\n"
        "mIzMo12muyU0Tlc/RcW1H74HdVegPF3V/5IyE2vmwxsbXf99HL7GJ9FY8NfBmmw9\n"
        "96HD/n46k+4tyWuKumSauy7YJnjobzfR25ZDTytRKKwPre/Qqrd/d65NH9dlPt7D\n"
        "v7bLiqb3sdP/VTK51ARC903RF4cEt+AZZbAYfdEtMDM0+tt0e8Fihu+1kBpar2dk\n"
        "Nt28fAoVsZc8EKna7vBa2w==\n"
        "-----END PRIVATE KEY-----\n"
        ;
    BIO *bio = BIO_new_mem_buf(pem, (int)sizeof pem - 1);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    if (!key) {
        fprintf(stderr, "fuzz: cannot load the built-in test key\n");
        exit(2);
    }
    return key;
}

#endif
