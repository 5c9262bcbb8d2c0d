/* The pod sandbox's pause process for the e2e kubelet nodes' registry.k8s.io/pause image
 * (e2e/nodes/images builds it with `gcc -static -O2`): it holds the pod's namespaces and does
 * nothing else, as Kubernetes' own pause. It sleeps in pause() forever, exits 0 on SIGINT or
 * SIGTERM, and, being PID 1 of a pod that shares its PID namespace, reaps every child that
 * exits (SIGCHLD) so no zombie is left behind. `pause -v` prints its version. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

static void sigdown(int signo)
{
	static const char msg[] = "pause: shutting down, got signal\n";
	(void)signo;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(0);
}

static void sigreap(int signo)
{
	int saved = errno;
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

int main(int argc, char **argv)
{
	struct sigaction down = { .sa_handler = sigdown };
	struct sigaction reap = { .sa_handler = sigreap, .sa_flags = SA_NOCLDSTOP | SA_RESTART };

	for (int i = 1; i < argc; i++) {
		if (strcasecmp(argv[i], "-v") == 0) {
			puts("pause.c (sluice e2e/nodes)");
			return 0;
		}
	}
	if (getpid() != 1)
		fprintf(stderr, "Warning: pause should be the first process\n");
	sigemptyset(&down.sa_mask);
	sigemptyset(&reap.sa_mask);
	if (sigaction(SIGINT, &down, NULL) < 0)
		return 1;
	if (sigaction(SIGTERM, &down, NULL) < 0)
		return 2;
	if (sigaction(SIGCHLD, &reap, NULL) < 0)
		return 3;
	for (;;)
		pause();
	fprintf(stderr, "Error: infinite loop terminated\n");
	return 42;
}
