/* The application side of tests/stacks.rs: connects to 127.0.0.1:PORT,
 * waits until the peer's data arrives, and closes without reading it, so
 * the kernel sends an RST (close_unread_data) from inside close(). Built
 * with frame pointers and debug info; the function names are what the test
 * looks for in the user stack. It then waits for stdin to close, or with
 * a second argument exits that many milliseconds after the close: rsttrace
 * reads the process's maps when the event arrives, and a process that has
 * exited by then gets raw addresses instead of symbols. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) static void drop_connection_with_unread_data(int fd)
{
    close(fd); /* the RST is sent here */
}

__attribute__((noinline)) static int connect_and_wait_for_data(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        exit(2);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        exit(3);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        return 1;
    int fd = connect_and_wait_for_data(atoi(argv[1]));
    drop_connection_with_unread_data(fd);
    if (argc == 3) {
        usleep(atoi(argv[2]) * 1000);
        return 0;
    }
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
