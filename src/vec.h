/* Growable arrays: the one copy of "grow the array when it is full".
 *
 *   struct ids { uint64_t *v; size_t n, cap; };
 *   if (vec_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v, 16) < 0)
 *       return -ENOMEM;
 *   l->v[l->n++] = id;
 *
 * The capacity starts at first (1 if 0) and doubles until need fits.  A
 * struct that frees its array sets cap back to 0 with the pointer.  Sets no
 * message (the caller says what it was collecting). */
#ifndef PACTFS_VEC_H
#define PACTFS_VEC_H

#include <stddef.h>
#include <stdint.h>

/* arrayp: the address of the array pointer (any element type); *cap its
 * capacity in elements of size bytes.  0, or -ENOMEM with the array, its
 * contents and *cap unchanged (also when need * size would overflow). */
int vec_reserve(void *arrayp, size_t *cap, size_t need, size_t size, size_t first);

/* A list of 64-bit ids (folders, accounts, inodes): { 0 } is empty. */
struct vec_u64 {
    uint64_t *v;
    size_t n, cap;
};
/* Append x: 0 or -ENOMEM (the list unchanged). */
int vec_u64_push(struct vec_u64 *l, uint64_t x);
/* Free the array; the list is empty again. */
void vec_u64_free(struct vec_u64 *l);

#endif
