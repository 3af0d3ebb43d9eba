/* linpack: solve a dense n x n system by Gaussian elimination with partial
 * pivoting, n = arg1 (1..400): demand grows with n^3, as in LINPACK. */
#include <math.h>
#include "task.h"

int main(int argc, char **argv)
{
    unsigned long n = task_arg1(argc, argv);
    n = n < 1 ? 1 : n > 400 ? 400 : n;
    double *a = malloc(n * n * sizeof *a), *b = malloc(n * sizeof *b);
    unsigned seed = 1;
    for (unsigned long i = 0; i < n * n; i++)
        a[i] = (seed = seed * 1103515245u + 12345u) / 4294967296.0 - 0.5;
    for (unsigned long i = 0; i < n; i++)
        b[i] = 1.0, a[i * n + i] += n;
    for (unsigned long k = 0; k < n; k++) {
        unsigned long p = k;
        for (unsigned long i = k + 1; i < n; i++)
            if (fabs(a[i * n + k]) > fabs(a[p * n + k]))
                p = i;
        for (unsigned long j = 0; j < n; j++) {
            double t = a[k * n + j]; a[k * n + j] = a[p * n + j]; a[p * n + j] = t;
        }
        double t = b[k]; b[k] = b[p]; b[p] = t;
        for (unsigned long i = k + 1; i < n; i++) {
            double f = a[i * n + k] / a[k * n + k];
            for (unsigned long j = k; j < n; j++)
                a[i * n + j] -= f * a[k * n + j];
            b[i] -= f * b[k];
        }
    }
    for (unsigned long i = n; i-- > 0;) {
        for (unsigned long j = i + 1; j < n; j++)
            b[i] -= a[i * n + j] * b[j];
        b[i] /= a[i * n + i];
    }
    printf("linpack n=%lu x0=%g\n", n, b[0]);
    return 0;
}
