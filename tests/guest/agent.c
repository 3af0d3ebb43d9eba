/*
 * agent.c - the target side of the Genode task-loader protocol (DESIGN.md
 * section 5) for the distributor's Linux test guest.
 *
 * No Genode image can be built where the distributor is developed, so this
 * agent stands in for Genode's task loader: it listens on TCP port 3001, speaks
 * the same uint32 little-endian words, and really runs the task-set it is sent.
 *
 * Running a task-set:
 *  - each task's pkg names one of the guest's built-in programs in /tasks
 *    (hey, pi, cond_42, cond_mod, linpack, tumatmul, namaste, idle; see
 *    tests/guest/tasks/); it is started with its arg1 as argv[1].  Binaries
 *    received by SEND_BINARIES are accepted and stored in /tmp/binaries, but
 *    a built-in program of the same name wins (the distributor sends Genode
 *    binaries, which cannot run on Linux); a pkg that is not built in runs
 *    the received file, and a pkg with neither ends EXIT_ERROR.
 *  - job k is released at offset + k*period ms after START (period 0: the
 *    next job is released as soon as the previous one ends), numberofjobs
 *    jobs in all; a job still running at its period end is killed and ends
 *    EXIT_PERIOD; with criticaltime > 0 a job still running criticaltime ms
 *    after its start is killed and ends EXIT_CRITICAL.
 *  - priorities: Genode's 0 (highest) .. 127 (lowest) map to Linux
 *    SCHED_FIFO 98 .. 1, linearly (rt = 98 - p * 97 / 127); 128 ("ignore the
 *    priority, schedule by deadline") maps to SCHED_FIFO 1.  The agent itself
 *    runs at SCHED_FIFO 99 so that releases and kills are never delayed by a
 *    task.  Linux's default real-time throttling (95 %) stays on: a runaway
 *    task cannot starve the network stack.
 *  - quota, caps, cores and coreoffset are accepted and not enforced;
 *    OPTIMIZE (admission control) is accepted and ignored.
 *  - events are pushed as size + "<profile><events>...</events></profile>"
 *    + NUL (the size counts the NUL), time stamps in ms since START.
 *  - STOP kills running jobs (EXIT_EXTERNAL) and releases no more; CLEAR
 *    kills everything silently and forgets the task-set; REBOOT reboots the
 *    guest kernel.
 *
 * One client at a time, as on Genode: a second connection waits in the
 * listen backlog until the first closes.  Everything runs in one thread
 * around ppoll(): the client socket, a signalfd for SIGCHLD and the next
 * release or kill time, so no timing depends on a fixed sleep.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT 3001
#define MAX_TASKS 64
#define MAX_MESSAGE (16u << 20)
#define BUILTIN_DIR "/tasks"
#define RECEIVED_DIR "/tmp/binaries"
#define READY_MARKER "distributor-agent: ready"

enum {
    AVAILABLE = 0xAAAAA,
    CLEAR = 0xDE6,
    OPTIMIZE = 0x6F7074,
    SEND_DESCS = 0xDE5,
    SEND_BINARIES = 0xDE5F11E,
    GO_SEND = 0x90,
    START = 0x514DE5,
    STOP = 0x514DE6,
    REBOOT = 0x159D3,
};

struct task {
    int id;
    char pkg[16];
    unsigned long arg1;
    long priority, period, offset, numberofjobs, criticaltime;
    long started;          /* jobs started so far */
    int64_t next_release;  /* us since START */
    pid_t pid;             /* running job, 0 when none */
    int64_t job_start;     /* us since START */
    int64_t kill_at;       /* us since START, -1 = never */
    const char *kill_type; /* exit type when killed at kill_at */
    int done;
};

static struct task tasks[MAX_TASKS];
static int task_count;
static int running;        /* between START and STOP/CLEAR/all done */
static int64_t start_us;   /* CLOCK_MONOTONIC at START */

static int client = -1;
static unsigned char *in_buf;
static size_t in_len, in_cap;
static unsigned char *out_buf;
static size_t out_len, out_cap;
static char events[1 << 16];
static size_t events_len;
static unsigned binaries_left;

/* -- small helpers -------------------------------------------------------- */

static void say(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("agent: ", stdout);
    vprintf(format, args);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(args);
}

static int64_t monotonic_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

static int64_t since_start_us(void) { return monotonic_us() - start_us; }

static void grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t size = *cap ? *cap : 4096;
    while (size < need)
        size *= 2;
    unsigned char *bigger = realloc(*buf, size);
    if (!bigger) {
        say("out of memory (%zu bytes)", size);
        exit(1);
    }
    *buf = bigger;
    *cap = size;
}

static void put_bytes(const void *data, size_t size)
{
    grow(&out_buf, &out_cap, out_len + size);
    memcpy(out_buf + out_len, data, size);
    out_len += size;
}

static void put_word(uint32_t word)
{
    unsigned char le[4] = {word, word >> 8, word >> 16, word >> 24};
    put_bytes(le, 4);
}

static uint32_t word_at(const unsigned char *p)
{
    return p[0] | p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* -- events ------------------------------------------------------------------ */

static void event(const struct task *task, const char *type, int64_t at_us)
{
    if (events_len + 96 > sizeof events)
        return; /* flushed every loop turn; 64 tasks cannot fill it */
    events_len += snprintf(events + events_len, sizeof events - events_len,
                           "<event task-id=\"%d\" type=\"%s\" time-stamp=\"%lld\"/>",
                           task->id, type, (long long)(at_us / 1000));
}

static void flush_events(void)
{
    if (!events_len)
        return;
    if (client >= 0) {
        static const char head[] = "<profile><events>", tail[] = "</events></profile>";
        put_word(sizeof head - 1 + events_len + sizeof tail - 1 + 1);
        put_bytes(head, sizeof head - 1);
        put_bytes(events, events_len);
        put_bytes(tail, sizeof tail); /* with its NUL */
    }
    events_len = 0;
}

/* -- running jobs ---------------------------------------------------------- */

static int rt_priority(long genode_priority)
{
    if (genode_priority >= 127)
        return 1;
    if (genode_priority < 0)
        genode_priority = 0;
    return 98 - (int)(genode_priority * 97 / 127);
}

static int program_path(const struct task *task, char *path, size_t size)
{
    snprintf(path, size, BUILTIN_DIR "/%s", task->pkg);
    if (access(path, X_OK) == 0)
        return 0;
    snprintf(path, size, RECEIVED_DIR "/%s", task->pkg);
    return access(path, X_OK);
}

static void finish_job(struct task *task, const char *type, int64_t at_us)
{
    event(task, type, at_us);
    task->pid = 0;
    if (task->started >= task->numberofjobs) {
        task->done = 1;
        event(task, "JOBS_DONE", at_us);
    } else if (task->period == 0) {
        task->next_release = at_us;
    }
}

static void start_job(struct task *task, int64_t now)
{
    char path[64], arg[24];
    task->started++;
    task->job_start = now;
    if (task->period)
        task->next_release = task->offset * 1000 + task->started * task->period * 1000;
    event(task, "START", now);
    if (program_path(task, path, sizeof path) != 0) {
        say("task %d: no program %s (built-in or received)", task->id, task->pkg);
        finish_job(task, "EXIT_ERROR", now);
        return;
    }
    snprintf(arg, sizeof arg, "%lu", task->arg1);
    pid_t pid = fork();
    if (pid < 0) {
        say("task %d: fork: %s", task->id, strerror(errno));
        finish_job(task, "EXIT_ERROR", now);
        return;
    }
    if (pid == 0) {
        struct sched_param param = {.sched_priority = rt_priority(task->priority)};
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        sched_setscheduler(0, SCHED_FIFO, &param);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execl(path, task->pkg, arg, (char *)NULL);
        _exit(127);
    }
    task->pid = pid;
    task->kill_at = task->period ? task->next_release : -1;
    task->kill_type = "EXIT_PERIOD";
    if (task->criticaltime > 0) {
        int64_t critical = now + task->criticaltime * 1000;
        if (task->kill_at < 0 || critical < task->kill_at) {
            task->kill_at = critical;
            task->kill_type = "EXIT_CRITICAL";
        }
    }
}

/* A killed process dies only when it next runs; a job waiting behind a
 * spinning task of its own priority would never run, and the agent would
 * wait for it for ever.  So the victim first gets the agent's own priority:
 * it runs as soon as the agent sleeps in waitpid, and is gone at once. */
static void kill_now(pid_t pid)
{
    struct sched_param top = {.sched_priority = 99};
    sched_setscheduler(pid, SCHED_FIFO, &top);
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void kill_job(struct task *task, const char *type, int64_t at_us)
{
    kill_now(task->pid);
    finish_job(task, type, at_us);
}

static struct task *task_of_pid(pid_t pid)
{
    for (int i = 0; i < task_count; i++)
        if (tasks[i].pid == pid)
            return &tasks[i];
    return NULL;
}

static void reap_children(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct task *task = task_of_pid(pid);
        if (!task)
            continue;
        int failed = WIFEXITED(status) && WEXITSTATUS(status) == 127;
        if (failed)
            say("task %d: could not execute %s", task->id, task->pkg);
        finish_job(task, failed ? "EXIT_ERROR" : "EXIT", since_start_us());
    }
}

/* Releases and kills that are due; returns the next due time (-1 = none). */
static int64_t run_due(void)
{
    int64_t next = -1;
    if (!running)
        return next;
    int64_t now = since_start_us();
    for (int i = 0; i < task_count; i++) {
        struct task *task = &tasks[i];
        if (task->pid && task->kill_at >= 0 && now >= task->kill_at)
            kill_job(task, task->kill_type, now);
        if (!task->pid && !task->done && now >= task->next_release)
            start_job(task, now);
        int64_t due = task->pid ? task->kill_at : (task->done ? -1 : task->next_release);
        if (due >= 0 && (next < 0 || due < next))
            next = due;
    }
    int all_done = 1;
    for (int i = 0; i < task_count; i++)
        all_done &= tasks[i].done;
    if (all_done)
        running = 0;
    return next;
}

static void stop_all(const char *type)
{
    int64_t now = since_start_us();
    for (int i = 0; i < task_count; i++) {
        struct task *task = &tasks[i];
        if (!task->pid)
            continue;
        kill_now(task->pid);
        task->pid = 0;
        if (type)
            event(task, type, now);
    }
    running = 0;
}

/* -- the task-set description ------------------------------------------ */

/* The text of <name>...</name> inside [from, to), or NULL. */
static const char *field(const char *from, const char *to, const char *name, char *value, size_t size)
{
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", name);
    snprintf(close, sizeof close, "</%s>", name);
    const char *start = memmem(from, to - from, open, strlen(open));
    if (!start)
        return NULL;
    start += strlen(open);
    const char *end = memmem(start, to - start, close, strlen(close));
    if (!end || (size_t)(end - start) >= size)
        return NULL;
    memcpy(value, start, end - start);
    value[end - start] = 0;
    return value;
}

static long number(const char *from, const char *to, const char *name, long fallback)
{
    char value[32];
    return field(from, to, name, value, sizeof value) ? strtol(value, NULL, 10) : fallback;
}

static void load_descs(const char *xml, size_t size)
{
    const char *end = xml + size, *at = xml;
    stop_all(NULL);
    task_count = 0;
    while (task_count < MAX_TASKS) {
        const char *open = memmem(at, end - at, "<periodictask>", 14);
        if (!open)
            break;
        const char *close = memmem(open, end - open, "</periodictask>", 15);
        if (!close)
            break;
        struct task *task = &tasks[task_count];
        memset(task, 0, sizeof *task);
        task->id = (int)number(open, close, "id", task_count);
        if (!field(open, close, "pkg", task->pkg, sizeof task->pkg) || strchr(task->pkg, '/'))
            strcpy(task->pkg, "?");
        task->arg1 = (unsigned long)number(open, close, "arg1", 0);
        task->priority = number(open, close, "priority", 127);
        task->period = number(open, close, "period", 0);
        task->offset = number(open, close, "offset", 0);
        task->numberofjobs = number(open, close, "numberofjobs", 1);
        task->criticaltime = number(open, close, "criticaltime", 0);
        task_count++;
        at = close + 15;
    }
    say("task-set of %d tasks", task_count);
}

static void start_taskset(void)
{
    stop_all(NULL);
    start_us = monotonic_us();
    for (int i = 0; i < task_count; i++) {
        struct task *task = &tasks[i];
        task->started = 0;
        task->done = task->numberofjobs < 1;
        task->pid = 0;
        task->next_release = task->offset * 1000;
    }
    running = task_count > 0;
}

/* -- binaries ------------------------------------------------------------- */

static void store_binary(const unsigned char *header, const unsigned char *data, uint32_t size)
{
    char name[16], path[64];
    memcpy(name, header, 15);
    name[15] = 0;
    if (!name[0] || strchr(name, '/') || name[0] == '.') {
        say("refused binary name %s", name);
        return;
    }
    mkdir(RECEIVED_DIR, 0755);
    snprintf(path, sizeof path, RECEIVED_DIR "/%s", name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        say("could not store binary %s: %s", name, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* -- the protocol ------------------------------------------------------- */

/* Handles one complete command at the head of in_buf; returns the bytes it
 * used, 0 when more bytes are needed, -1 on a protocol error. */
static long handle_command(void)
{
    if (binaries_left) {
        if (in_len < 20)
            return 0;
        uint32_t size = word_at(in_buf + 16);
        if (size > MAX_MESSAGE)
            return -1;
        if (in_len < 20 + (size_t)size)
            return 0;
        store_binary(in_buf, in_buf + 20, size);
        if (--binaries_left)
            put_word(GO_SEND);
        return 20 + (long)size;
    }
    if (in_len < 4)
        return 0;
    uint32_t command = word_at(in_buf);
    switch (command) {
    case AVAILABLE:
        put_word(AVAILABLE);
        return 4;
    case CLEAR:
        stop_all(NULL);
        task_count = 0;
        return 4;
    case START:
        start_taskset();
        return 4;
    case STOP:
        stop_all("EXIT_EXTERNAL");
        return 4;
    case REBOOT:
        say("reboot requested");
        stop_all(NULL);
        sync();
        reboot(RB_AUTOBOOT);
        return -1;
    case SEND_BINARIES:
        if (in_len < 8)
            return 0;
        binaries_left = word_at(in_buf + 4);
        if (binaries_left)
            put_word(GO_SEND);
        return 8;
    case OPTIMIZE:
    case SEND_DESCS: {
        if (in_len < 8)
            return 0;
        uint32_t size = word_at(in_buf + 4);
        if (size > MAX_MESSAGE)
            return -1;
        if (in_len < 8 + (size_t)size)
            return 0;
        if (command == SEND_DESCS)
            load_descs((const char *)in_buf + 8, size);
        return 8 + (long)size;
    }
    default:
        say("unknown command 0x%x: closing the connection", command);
        return -1;
    }
}

static void drop_client(void)
{
    close(client);
    client = -1;
    in_len = out_len = 0;
    binaries_left = 0;
    say("client gone");
}

static void read_client(void)
{
    grow(&in_buf, &in_cap, in_len + 65536);
    ssize_t got = recv(client, in_buf + in_len, in_cap - in_len, 0);
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        drop_client();
        return;
    }
    in_len += got;
    long used;
    while ((used = handle_command()) > 0) {
        memmove(in_buf, in_buf + used, in_len - used);
        in_len -= used;
    }
    if (used < 0)
        drop_client();
}

static void write_client(void)
{
    ssize_t sent = send(client, out_buf, out_len, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EINTR)
            drop_client();
        return;
    }
    memmove(out_buf, out_buf + sent, out_len - sent);
    out_len -= sent;
}

/* -- main loop ------------------------------------------------------------ */

static int listen_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) || listen(fd, 4)) {
        say("cannot listen on port %d: %s", PORT, strerror(errno));
        exit(1);
    }
    return fd;
}

static int child_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGPIPE);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigdelset(&set, SIGPIPE);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static void accept_client(int listener)
{
    int one = 1;
    client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client >= 0) {
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        say("client connected");
    }
}

int main(void)
{
    struct sched_param param = {.sched_priority = 99};
    if (sched_setscheduler(0, SCHED_FIFO, &param))
        say("no SCHED_FIFO for the agent: %s", strerror(errno));
    int listener = listen_socket(), signals = child_signals();
    say("%s port=%d", READY_MARKER, PORT);
    for (;;) {
        int64_t due = run_due();
        flush_events();
        struct pollfd fds[3] = {
            {.fd = signals, .events = POLLIN},
            {.fd = client >= 0 ? client : listener,
             .events = POLLIN | (client >= 0 && out_len ? POLLOUT : 0)},
        };
        struct timespec wait, *timeout = NULL;
        if (due >= 0) {
            int64_t left = due - since_start_us();
            if (left < 0)
                left = 0;
            wait.tv_sec = left / 1000000;
            wait.tv_nsec = (left % 1000000) * 1000;
            timeout = &wait;
        }
        if (ppoll(fds, 2, timeout, NULL) < 0 && errno != EINTR) {
            say("ppoll: %s", strerror(errno));
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(signals, &info, sizeof info) > 0)
                ;
            reap_children();
        }
        if (client < 0) {
            if (fds[1].revents & POLLIN)
                accept_client(listener);
            continue;
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR))
            read_client();
        if (client >= 0 && (fds[1].revents & POLLOUT))
            write_client();
    }
}
