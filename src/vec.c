/* Growable arrays (vec.h). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

int vec_reserve(void *arrayp, size_t *cap, size_t need, size_t size, size_t first)
{
    size_t c = *cap;
    void *old, *grown;

    if (need <= c)
        return 0;
    if (size == 0)
        return -ENOMEM;
    if (c == 0)
        c = first ? first : 1;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return -ENOMEM;
        c *= 2;
    }
    if (c > SIZE_MAX / size)
        return -ENOMEM;
    /* The array pointer is read and written as bytes: arrayp may point at
     * a pointer of any object type. */
    memcpy(&old, arrayp, sizeof old);
    grown = realloc(old, c * size);
    if (!grown)
        return -ENOMEM;
    memcpy(arrayp, &grown, sizeof grown);
    *cap = c;
    return 0;
}

int vec_u64_push(struct vec_u64 *l, uint64_t x)
{
    if (vec_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v, 16) < 0)
        return -ENOMEM;
    l->v[l->n++] = x;
    return 0;
}

void vec_u64_free(struct vec_u64 *l)
{
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
