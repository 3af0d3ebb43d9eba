/* tumatmul: multiply two n x n matrices, n = arg1 (1..400): demand grows with n^3. */
#include "task.h"

int main(int argc, char **argv)
{
    unsigned long n = task_arg1(argc, argv);
    n = n < 1 ? 1 : n > 400 ? 400 : n;
    double *a = malloc(n * n * sizeof *a), *b = malloc(n * n * sizeof *b), *c = calloc(n * n, sizeof *c);
    for (unsigned long i = 0; i < n * n; i++)
        a[i] = (double)(i % 7), b[i] = (double)(i % 5);
    for (unsigned long i = 0; i < n; i++)
        for (unsigned long k = 0; k < n; k++)
            for (unsigned long j = 0; j < n; j++)
                c[i * n + j] += a[i * n + k] * b[k * n + j];
    printf("tumatmul n=%lu c00=%g\n", n, c[0]);
    return 0;
}
