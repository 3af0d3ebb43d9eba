/* cond_mod: a demand that depends on arg1 modulo 100 - compute for
 * (arg1 % 100) ms of CPU time, so a range of arg1 sweeps the demand. */
#include "task.h"

int main(int argc, char **argv)
{
    burn_cpu_ms(task_arg1(argc, argv) % 100);
    return 0;
}
