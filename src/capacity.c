#include "config.h"

#include "capacity.h"

uint64_t capacity_avail(const struct store_space_info *sp, const int *known, unsigned n,
                        unsigned k, unsigned m)
{
    double best = -1.0;

    if (k == 0)
        k = 1;
    for (unsigned i = 0; i < n; i++) {
        if (!known[i])
            continue;
        /* the first known endpoint of each filesystem speaks for it */
        unsigned first = i, c = 0;
        for (unsigned j = 0; j < n; j++) {
            if (!known[j] || sp[j].fs_id != sp[i].fs_id)
                continue;
            if (j < first)
                first = j;
            c++;
        }
        if (first != i)
            continue;
        double cap = (double)sp[i].avail * n * k / ((double)c * (k + m));
        if (best < 0 || cap < best)
            best = cap;
    }
    if (best < 0)
        return CAPACITY_UNLIMITED;
    if (best >= 18446744073709551615.0)
        return UINT64_MAX;
    return (uint64_t)best;
}
