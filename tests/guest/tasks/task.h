/*
 * task.h - what the test guest's task programs share.
 *
 * Each program mirrors one of the seed task kinds by name and is started by
 * the agent as "<pkg> <arg1>".  The CPU-bound ones measure their demand in
 * CPU time of their own (CLOCK_THREAD_CPUTIME_ID), not in loop iterations,
 * so a test can predict whether a job overruns its period however fast the
 * emulator happens to run.
 */
#ifndef TASK_H
#define TASK_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline unsigned long task_arg1(int argc, char **argv)
{
    return argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
}

static inline double cpu_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

/* Compute (not sleep) for `ms` ms of CPU time; ms < 0 computes forever. */
static inline double burn_cpu_ms(double ms)
{
    volatile double sink = 0;
    double until = cpu_ms() + ms;
    for (unsigned long i = 1; ms < 0 || cpu_ms() < until; i++)
        for (int j = 0; j < 1000; j++)
            sink += 1.0 / (i * 1000.0 + j);
    return sink;
}

#endif
