#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "secmem.h"

/* ---- writer ---- */

void wbuf_init(struct wbuf *b)
{
    memset(b, 0, sizeof *b);
}

void wbuf_init_secure(struct wbuf *b)
{
    memset(b, 0, sizeof *b);
    b->secure = 1;
}

static void *wbuf_alloc(const struct wbuf *b, size_t n)
{
    return b->secure ? secmem_alloc(n) : malloc(n);
}

static void wbuf_release(const struct wbuf *b, void *p, size_t n)
{
    if (b->secure)
        secmem_free(p, n);
    else
        free(p);
}

/* Make room for n more bytes; sets the sticky error on failure. */
static int wbuf_grow(struct wbuf *b, size_t n)
{
    size_t need, cap;
    uint8_t *p;

    if (b->err)
        return b->err;
    if (n > SIZE_MAX - b->len)
        return b->err = -ENOMEM;
    need = b->len + n;
    if (need <= b->cap)
        return 0;
    /* secmem hands out whole pages anyway. */
    cap = b->cap ? b->cap : (b->secure ? 4096 : 64);
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    /* No realloc: a secure buffer must be copied and the old one wiped. */
    p = wbuf_alloc(b, cap);
    if (!p)
        return b->err = -ENOMEM;
    if (b->len)
        memcpy(p, b->data, b->len);
    wbuf_release(b, b->data, b->cap);
    b->data = p;
    b->cap = cap;
    return 0;
}

uint8_t *wbuf_reserve(struct wbuf *b, size_t n)
{
    uint8_t *p;

    if (wbuf_grow(b, n) != 0)
        return NULL;
    p = b->data + b->len;
    b->len += n;
    return p;
}

void wbuf_put_bytes(struct wbuf *b, const void *p, size_t n)
{
    uint8_t *dst;

    if (n == 0)
        return;
    dst = wbuf_reserve(b, n);
    if (dst)
        memcpy(dst, p, n);
}

void wbuf_put_u8(struct wbuf *b, uint8_t v)
{
    wbuf_put_bytes(b, &v, 1);
}

void wbuf_put_u16(struct wbuf *b, uint16_t v)
{
    uint8_t be[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    wbuf_put_bytes(b, be, sizeof be);
}

void wbuf_put_u32(struct wbuf *b, uint32_t v)
{
    uint8_t be[4];
    for (int i = 0; i < 4; i++)
        be[i] = (uint8_t)(v >> (24 - 8 * i));
    wbuf_put_bytes(b, be, sizeof be);
}

void wbuf_put_u64(struct wbuf *b, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    wbuf_put_bytes(b, be, sizeof be);
}

void wbuf_put_blob(struct wbuf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        if (!b->err)
            b->err = -ENOMEM;
        return;
    }
    wbuf_put_u32(b, (uint32_t)n);
    wbuf_put_bytes(b, p, n);
}

void wbuf_put_str(struct wbuf *b, const char *s)
{
    wbuf_put_blob(b, s, s ? strlen(s) : 0);
}

int wbuf_status(const struct wbuf *b)
{
    return b->err;
}

uint8_t *wbuf_steal(struct wbuf *b, size_t *len)
{
    uint8_t *out;

    if (b->err) {
        wbuf_free(b);
        *len = 0;
        return NULL;
    }
    /* Exact-size copy: secure callers free with the length they get back,
     * and plain callers always get a non-NULL pointer, even for 0 bytes. */
    out = wbuf_alloc(b, b->len ? b->len : 1);
    if (!out) {
        wbuf_free(b);
        *len = 0;
        return NULL;
    }
    if (b->len)
        memcpy(out, b->data, b->len);
    *len = b->len;
    wbuf_free(b);
    return out;
}

void wbuf_free(struct wbuf *b)
{
    if (b->data && b->secure)
        secmem_free(b->data, b->cap);
    else
        free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- reader ---- */

void rbuf_init(struct rbuf *r, const void *p, size_t len)
{
    r->p = p;
    r->len = p ? len : 0;
    r->off = 0;
    r->err = 0;
}

size_t rbuf_remaining(const struct rbuf *r)
{
    return r->len - r->off;
}

int rbuf_get_ref(struct rbuf *r, const uint8_t **p, size_t n)
{
    if (r->err)
        return r->err;
    if (n > rbuf_remaining(r))
        return r->err = -EBADMSG;
    *p = r->p + r->off;
    r->off += n;
    return 0;
}

int rbuf_get_bytes(struct rbuf *r, void *dst, size_t n)
{
    const uint8_t *src;
    int rc = rbuf_get_ref(r, &src, n);

    if (rc == 0 && n)
        memcpy(dst, src, n);
    return rc;
}

static int rbuf_get_be(struct rbuf *r, size_t n, uint64_t *v)
{
    const uint8_t *src;
    uint64_t acc = 0;
    int rc = rbuf_get_ref(r, &src, n);

    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        acc = acc << 8 | src[i];
    *v = acc;
    return 0;
}

int rbuf_get_u8(struct rbuf *r, uint8_t *v)
{
    uint64_t x;
    int rc = rbuf_get_be(r, 1, &x);
    if (rc == 0)
        *v = (uint8_t)x;
    return rc;
}

int rbuf_get_u16(struct rbuf *r, uint16_t *v)
{
    uint64_t x;
    int rc = rbuf_get_be(r, 2, &x);
    if (rc == 0)
        *v = (uint16_t)x;
    return rc;
}

int rbuf_get_u32(struct rbuf *r, uint32_t *v)
{
    uint64_t x;
    int rc = rbuf_get_be(r, 4, &x);
    if (rc == 0)
        *v = (uint32_t)x;
    return rc;
}

int rbuf_get_u64(struct rbuf *r, uint64_t *v)
{
    return rbuf_get_be(r, 8, v);
}

int rbuf_get_blob(struct rbuf *r, const uint8_t **p, size_t *n, size_t max)
{
    uint32_t len;
    int rc = rbuf_get_u32(r, &len);

    if (rc)
        return rc;
    if (len > max)
        return r->err = -EBADMSG;
    rc = rbuf_get_ref(r, p, len);
    if (rc == 0)
        *n = len;
    return rc;
}

int rbuf_end(const struct rbuf *r)
{
    if (r->err)
        return r->err;
    return rbuf_remaining(r) ? -EBADMSG : 0;
}
