/* hey: the seeds' smallest task - greet and end at once. */
#include "task.h"

int main(int argc, char **argv)
{
    printf("hey %lu\n", task_arg1(argc, argv));
    return 0;
}
