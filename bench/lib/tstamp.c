/* bench/lib/tstamp.c: the clock of bench/startup.
 *
 * `tstamp FILE CMD ARGS...` appends CLOCK_MONOTONIC (ns) to FILE, then execs CMD (the supervisor or
 * init under test): the moment just before the exec.
 * `tstamp FILE` appends the time and then waits for a signal: a service whose first instructions record
 * when it started. Installed as an s6 `run` file (argv[0] is ./run; s6-supervise may pass the
 * service's name as an argument) it writes ./stamp in the service directory instead.
 * It is C and static so that the service's own start-up (no dynamic loader, no interpreter) adds as
 * little as possible to what is measured. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int as_run = strcmp(argv[0], "./run") == 0 || strcmp(argv[0], "run") == 0;
    const char *path = (argc > 1 && !as_run) ? argv[1] : "stamp";
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        perror(path);
        return 111;
    }
    fprintf(f, "%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    if (fclose(f) != 0) {
        perror(path);
        return 111;
    }
    if (argc > 2 && !as_run) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        return 127;
    }
    for (;;)
        pause(); /* until the supervisor stops it */
}
