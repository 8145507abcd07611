/* Bounded reader and writer for every byte layout pactfs reads or writes:
 * fragment and chunk headers, sealed keys, envelopes, database blobs.  The
 * metadata store and the storage endpoints are untrusted input, so nothing
 * parses bytes by pointer arithmetic outside this module.
 *
 * Integers are big-endian.  A "blob" is a u32 length followed by the bytes.
 * Errors are sticky: after the first failure every call is a no-op and
 * wbuf_finish()/rbuf_end() report it, so callers may check once at the end.
 */
#ifndef PACTFS_BUF_H
#define PACTFS_BUF_H

#include <stddef.h>
#include <stdint.h>

struct wbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    int err;      /* 0 or -ENOMEM */
    int secure;   /* storage from secmem (wiped on free) */
};

void wbuf_init(struct wbuf *b);
void wbuf_init_secure(struct wbuf *b);
void wbuf_put_u8(struct wbuf *b, uint8_t v);
void wbuf_put_u16(struct wbuf *b, uint16_t v);
void wbuf_put_u32(struct wbuf *b, uint32_t v);
void wbuf_put_u64(struct wbuf *b, uint64_t v);
void wbuf_put_bytes(struct wbuf *b, const void *p, size_t n);
void wbuf_put_blob(struct wbuf *b, const void *p, size_t n);
void wbuf_put_str(struct wbuf *b, const char *s);   /* as a blob, no NUL */
/* Reserve n bytes and return a pointer to fill (NULL on error). */
uint8_t *wbuf_reserve(struct wbuf *b, size_t n);
/* 0 if every put succeeded, else the sticky error. */
int wbuf_status(const struct wbuf *b);
/* Hand the bytes to the caller (malloc'd, or secmem if secure: free with
 * secmem_free(p, len)).  Returns NULL and frees on error. */
uint8_t *wbuf_steal(struct wbuf *b, size_t *len);
void wbuf_free(struct wbuf *b);

struct rbuf {
    const uint8_t *p;
    size_t len;
    size_t off;
    int err;      /* 0 or -EBADMSG */
};

void rbuf_init(struct rbuf *r, const void *p, size_t len);
int rbuf_get_u8(struct rbuf *r, uint8_t *v);
int rbuf_get_u16(struct rbuf *r, uint16_t *v);
int rbuf_get_u32(struct rbuf *r, uint32_t *v);
int rbuf_get_u64(struct rbuf *r, uint64_t *v);
int rbuf_get_bytes(struct rbuf *r, void *dst, size_t n);
/* Point into the buffer at the next n bytes (no copy). */
int rbuf_get_ref(struct rbuf *r, const uint8_t **p, size_t n);
/* A blob: pointer into the buffer and its length; max bounds the length. */
int rbuf_get_blob(struct rbuf *r, const uint8_t **p, size_t *n, size_t max);
size_t rbuf_remaining(const struct rbuf *r);
/* 0 if no error and every byte was consumed, else -EBADMSG. */
int rbuf_end(const struct rbuf *r);

#endif
