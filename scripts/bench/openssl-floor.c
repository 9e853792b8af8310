/*
 * The floor under any OpenSSL-based SMTP prober on this machine: N sequential
 * STARTTLS handshakes (banner, EHLO, STARTTLS, full TLS handshake, QUIT) with
 * one shared SSL_CTX, no DNS, no certificate verification, no DANE, no
 * concurrency. scripts/bench-scan.sh runs it beside mailtls and
 * posttls-finger, so that their CPU per check can be read against what
 * libssl and the kernel cost by themselves.
 *
 * usage: openssl-floor N SERVERS BASE   (connects to BASE.1 .. BASE.SERVERS:25)
 */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads until the last line of an SMTP reply ("NNN text\r\n"). */
static int read_reply(int fd, char *buf, int size)
{
    int total = 0, r;
    while ((r = read(fd, buf + total, size - total - 1)) > 0) {
        total += r;
        buf[total] = 0;
        char *line = buf, *end;
        while ((end = strstr(line, "\r\n"))) {
            if (end - line >= 4 && line[3] == ' ')
                return buf[0] == '2' ? 0 : -1;
            line = end + 2;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s N SERVERS BASE\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), servers = atoi(argv[2]), ok = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    char buf[8192], ip[64];
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(25)};
        snprintf(ip, sizeof ip, "%s.%d", argv[3], i % servers + 1);
        inet_pton(AF_INET, ip, &addr.sin_addr);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || read_reply(fd, buf, sizeof buf) ||
            write(fd, "EHLO floor\r\n", 12) != 12 || read_reply(fd, buf, sizeof buf) ||
            write(fd, "STARTTLS\r\n", 10) != 10 || read_reply(fd, buf, sizeof buf)) {
            close(fd);
            continue;
        }
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) == 1) {
            X509 *peer = SSL_get1_peer_certificate(ssl);
            if (peer)
                ok++;
            X509_free(peer);
            SSL_write(ssl, "QUIT\r\n", 6);
            SSL_read(ssl, buf, sizeof buf);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
    SSL_CTX_free(ctx);
    printf("%d\n", ok);
    return 0;
}
