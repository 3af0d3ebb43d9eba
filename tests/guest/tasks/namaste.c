/* namaste: like hey, another trivial task that ends at once. */
#include "task.h"

int main(int argc, char **argv)
{
    printf("namaste %lu\n", task_arg1(argc, argv));
    return 0;
}
