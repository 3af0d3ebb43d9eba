/* idle: sleep arg1 ms without using the CPU (a job longer than its period
 * ends EXIT_PERIOD without delaying the other tasks). */
#include "task.h"

int main(int argc, char **argv)
{
    unsigned long ms = task_arg1(argc, argv);
    struct timespec wait = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&wait, &wait))
        ;
    return 0;
}
