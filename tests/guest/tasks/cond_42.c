/* cond_42: the seeds' conditional task - with arg1 = 42 it computes forever,
 * so every job runs until its period end kills it (EXIT_PERIOD; with period 0
 * and no criticaltime nothing ever ends it); any other arg1 ends at once. */
#include "task.h"

int main(int argc, char **argv)
{
    if (task_arg1(argc, argv) == 42)
        burn_cpu_ms(-1);
    return 0;
}
