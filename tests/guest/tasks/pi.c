/* pi: approximate pi by the Leibniz series with arg1 * 1000 terms (CPU-bound,
 * demand grows linearly with arg1). */
#include "task.h"

int main(int argc, char **argv)
{
    unsigned long terms = task_arg1(argc, argv) * 1000;
    double sum = 0;
    for (unsigned long k = 0; k < terms; k++)
        sum += (k % 2 ? -4.0 : 4.0) / (2.0 * k + 1.0);
    printf("pi %.10f after %lu terms\n", sum, terms);
    return 0;
}
