#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "erasure.h"
#include "error.h"

/* Decode tables are cached per erasure pattern (which fragments are present).
 * A handful of slots covers the common case: the same endpoint down for a
 * while.  Tables are copied out under the lock so an eviction never pulls
 * them from under a decoding thread. */
#define EC_CACHE_SLOTS 8
#define EC_TABLES_MAX (32 * EC_MAX_FRAGS * EC_MAX_FRAGS)

struct ec_decode_plan {
    uint32_t present_mask;      /* 0 = empty slot (never valid: k >= 1) */
    uint8_t sources[EC_MAX_FRAGS];  /* the k fragments decoded from */
    uint8_t targets[EC_MAX_FRAGS];  /* the fragments rebuilt */
    unsigned ntargets;
    uint8_t tables[EC_TABLES_MAX];
};

struct ec_codec {
    unsigned k, m;
    uint8_t matrix[EC_MAX_FRAGS * EC_MAX_FRAGS];   /* (k+m) x k, identity on top */
    uint8_t *enc_tables;                            /* 32 * k * m */
    pthread_mutex_t cache_lock;
    struct ec_decode_plan *cache;                   /* EC_CACHE_SLOTS */
    unsigned cache_next;                            /* round-robin eviction */
};

int ec_new(unsigned k, unsigned m, struct ec_codec **out)
{
    struct ec_codec *c;

    *out = NULL;
    if (k < 1 || k + m > EC_MAX_FRAGS)
        return pfs_err(-EINVAL, "erasure coding k=%u m=%u not supported: need k >= 1 and "
                       "k + m <= %d", k, m, EC_MAX_FRAGS);
    c = calloc(1, sizeof *c);
    if (!c)
        return pfs_err(-ENOMEM, "out of memory creating erasure codec");
    c->k = k;
    c->m = m;
    c->enc_tables = calloc(1, 32u * k * (m ? m : 1));
    c->cache = calloc(EC_CACHE_SLOTS, sizeof *c->cache);
    if (!c->enc_tables || !c->cache) {
        ec_free(c);
        return pfs_err(-ENOMEM, "out of memory creating erasure codec");
    }
    gf_gen_cauchy1_matrix(c->matrix, (int)(k + m), (int)k);
    if (m)
        ec_init_tables((int)k, (int)m, c->matrix + k * k, c->enc_tables);
    pthread_mutex_init(&c->cache_lock, NULL);
    *out = c;
    return 0;
}

void ec_free(struct ec_codec *c)
{
    if (!c)
        return;
    if (c->cache)
        pthread_mutex_destroy(&c->cache_lock);
    free(c->cache);
    free(c->enc_tables);
    free(c);
}

unsigned ec_k(const struct ec_codec *c)
{
    return c->k;
}

unsigned ec_m(const struct ec_codec *c)
{
    return c->m;
}

size_t ec_fragment_len(const struct ec_codec *c, size_t len)
{
    size_t per = (len + c->k - 1) / c->k;

    per = (per + 63) & ~(size_t)63;
    return per ? per : 64;
}

static int check_fraglen(size_t fraglen)
{
    if (fraglen == 0 || fraglen > INT_MAX)
        return pfs_err(-EINVAL, "erasure fragment length %zu out of range", fraglen);
    return 0;
}

int ec_encode(struct ec_codec *c, size_t fraglen, uint8_t **frags)
{
    int rc = check_fraglen(fraglen);

    if (rc)
        return rc;
    if (c->m)
        ec_encode_data((int)fraglen, (int)c->k, (int)c->m, c->enc_tables, frags, frags + c->k);
    return 0;
}

/* Row r of the generator times the k x k matrix inv: the coefficients that
 * produce fragment r from the chosen sources. */
static void row_times_matrix(const struct ec_codec *c, unsigned r, const uint8_t *inv,
                             uint8_t *out)
{
    for (unsigned j = 0; j < c->k; j++) {
        uint8_t acc = 0;
        for (unsigned i = 0; i < c->k; i++)
            acc ^= gf_mul(c->matrix[r * c->k + i], inv[i * c->k + j]);
        out[j] = acc;
    }
}

/* Build the plan for one erasure pattern: invert the submatrix of the first
 * k present rows, then express every missing row in terms of those rows. */
static int build_plan(const struct ec_codec *c, uint32_t present_mask,
                      struct ec_decode_plan *p)
{
    uint8_t sub[EC_MAX_FRAGS * EC_MAX_FRAGS], inv[EC_MAX_FRAGS * EC_MAX_FRAGS];
    uint8_t coef[EC_MAX_FRAGS * EC_MAX_FRAGS];
    unsigned n = c->k + c->m, ns = 0;

    p->ntargets = 0;
    for (unsigned i = 0; i < n; i++) {
        if ((present_mask >> i) & 1) {
            if (ns < c->k) {
                memcpy(sub + ns * c->k, c->matrix + i * c->k, c->k);
                p->sources[ns++] = (uint8_t)i;
            }
        } else {
            p->targets[p->ntargets++] = (uint8_t)i;
        }
    }
    if (gf_invert_matrix(sub, inv, (int)c->k) != 0)
        return pfs_err(-EIO, "erasure decode matrix not invertible (k=%u m=%u); "
                       "this is a bug", c->k, c->m);
    for (unsigned t = 0; t < p->ntargets; t++)
        row_times_matrix(c, p->targets[t], inv, coef + t * c->k);
    if (p->ntargets)
        ec_init_tables((int)c->k, (int)p->ntargets, coef, p->tables);
    p->present_mask = present_mask;
    return 0;
}

/* Copy the plan for present_mask into *p, from the cache or freshly built. */
static int get_plan(struct ec_codec *c, uint32_t present_mask, struct ec_decode_plan *p)
{
    int rc;

    pthread_mutex_lock(&c->cache_lock);
    for (unsigned i = 0; i < EC_CACHE_SLOTS; i++) {
        if (c->cache[i].present_mask == present_mask) {
            *p = c->cache[i];
            pthread_mutex_unlock(&c->cache_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&c->cache_lock);

    rc = build_plan(c, present_mask, p);
    if (rc)
        return rc;
    pthread_mutex_lock(&c->cache_lock);
    c->cache[c->cache_next] = *p;
    c->cache_next = (c->cache_next + 1) % EC_CACHE_SLOTS;
    pthread_mutex_unlock(&c->cache_lock);
    return 0;
}

int ec_decode(struct ec_codec *c, size_t fraglen, uint8_t **frags, const uint8_t *present)
{
    unsigned n = c->k + c->m, npresent = 0;
    uint32_t mask = 0;
    uint8_t *src[EC_MAX_FRAGS], *dst[EC_MAX_FRAGS];
    struct ec_decode_plan *plan;
    int rc = check_fraglen(fraglen);

    if (rc)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        if (present[i]) {
            mask |= 1u << i;
            npresent++;
        }
    }
    if (npresent < c->k)
        return pfs_err(-EIO, "only %u of %u fragments available, %u needed to rebuild",
                       npresent, n, c->k);
    if (npresent == n)
        return 0;
    /* The plan holds up to 8 KiB of tables: keep it off the stack. */
    plan = malloc(sizeof *plan);
    if (!plan)
        return pfs_err(-ENOMEM, "out of memory decoding erasure fragments");
    rc = get_plan(c, mask, plan);
    if (rc == 0) {
        for (unsigned i = 0; i < c->k; i++)
            src[i] = frags[plan->sources[i]];
        for (unsigned t = 0; t < plan->ntargets; t++)
            dst[t] = frags[plan->targets[t]];
        ec_encode_data((int)fraglen, (int)c->k, (int)plan->ntargets, plan->tables, src, dst);
    }
    free(plan);
    return rc;
}
