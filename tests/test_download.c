/* test_download.c: the cifar10 plugin fetching its data by itself (download = true), with no
 * outside network.
 *
 * The set-up writes a data set in the official layout (real-size files, zeros but for a marker at
 * the start of each) and packs it with tar three ways: as the official archive is packed, every
 * byte stored (it gzips to 180 KB but takes a second to pack and one to extract); with the zeros
 * left out as holes (--sparse: a few hundred bytes, extracted at once), for the tests about
 * everything but the bytes; and sparse without test_batch.bin. Each test then runs the plugin's
 * create against a fresh, empty work folder, with the archive served by an HTTP
 * server the test forks on 127.0.0.1 (it logs every request, can cut the first response halfway
 * and can ignore ranges, as python's http.server does), or read from a file:// URL. What it
 * checks: the data set arrives and equals its source; an interrupted download continues with a
 * range request; anything refused (a wrong checksum, a broken archive, no network) leaves the
 * work folder as empty as it was and says why in one line.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define FILE_BYTES 30730000 /* 10,000 records of 3,073 bytes */
#define ARCHIVE    "cifar-10-binary.tar.gz"
#define URL_PATH   "/" ARCHIVE
#define DEAD_URL   "http://127.0.0.1:1/" ARCHIVE /* port 1: nothing listens, the connection is refused */

static const char *const batch_files[] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
    "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin",
};
#define NBATCHES (int)(sizeof batch_files / sizeof batch_files[0])

static const char *const meta_text =
    "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";

/* Everything the group shares: the source folder and the three archives made from it. */
typedef struct fixture {
    char *root;
    char src[PATH_MAX];      /* ROOT/src/cifar-10-batches-bin */
    char dense[PATH_MAX];    /* ROOT/dense.tar.gz: the whole folder, packed as the official one is */
    char good[PATH_MAX];     /* ROOT/good.tar.gz: the whole folder, zeros as holes */
    char no_test[PATH_MAX];  /* ROOT/no-test.tar.gz: the same without test_batch.bin */
    char dense_md5[33], good_md5[33], good_sha256[65], no_test_md5[33];
} fixture;

/* ---- Files and folders ---- */

static void join(char *out, const char *dir, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) fail_msg("path too long: %s/%s", dir, name);
}

static void run_shell(const char *command)
{
    if (system(command) != 0) fail_msg("'%s' failed", command);
}

static void write_text(const char *file, const char *text)
{
    FILE *f = fopen(file, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) fail_msg("cannot write %s", file);
}

/* A real-size batch file: zeros (label 0, black images) but for a marker in its first record, so
 * that files cannot be swapped unnoticed. ftruncate makes the zeros without writing them. */
static void write_batch(const char *dir, const char *name, int marker)
{
    char file[PATH_MAX];
    join(file, dir, name);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint8_t first[4] = { (uint8_t)(marker % 10), (uint8_t)marker, 0xAB, 0xCD };
    if (fd < 0 || write(fd, first, sizeof first) != (ssize_t)sizeof first || ftruncate(fd, FILE_BYTES) != 0 ||
        close(fd) != 0)
        fail_msg("cannot write %s: %s", file, strerror(errno));
}

static void write_source(const char *dir)
{
    for (int i = 0; i < NBATCHES; i++) write_batch(dir, batch_files[i], i + 1);
    char file[PATH_MAX];
    join(file, dir, "batches.meta.txt");
    write_text(file, meta_text);
    join(file, dir, "readme.html");
    write_text(file, "<html>the official archive has one</html>\n");
}

/* The first word `COMMAND FILE` prints (md5sum, sha256sum) into out (len bytes). */
static void hash_file(const char *command, const char *file, char *out, size_t len)
{
    char line[PATH_MAX + 32];
    snprintf(line, sizeof line, "%s '%s'", command, file);
    FILE *p = popen(line, "r");
    if (!p) fail_msg("cannot run %s", line);
    char fmt[16];
    snprintf(fmt, sizeof fmt, "%%%zus", len - 1);
    int got = fscanf(p, fmt, out);
    if (pclose(p) != 0 || got != 1 || strlen(out) != len - 1) fail_msg("'%s' gave no checksum", line);
}

/* Entries in DIR other than . and .. (0 for a folder that does not exist). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void assert_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    if (!fa || !fb) fail_msg("cannot open %s or %s", a, b);
    static char ba[1 << 16], bb[1 << 16];
    for (size_t na, nb;;) {
        na = fread(ba, 1, sizeof ba, fa);
        nb = fread(bb, 1, sizeof bb, fb);
        if (na != nb || memcmp(ba, bb, na) != 0) fail_msg("%s differs from %s", a, b);
        if (na == 0) break;
    }
    fclose(fa);
    fclose(fb);
}

/* The first LEN bytes of FROM into TO: what a run killed mid-download leaves in its .part. */
static void copy_head(const char *from, const char *to, long len)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) fail_msg("cannot copy %s to %s", from, to);
    for (long i = 0; i < len; i++)
        if (fputc(fgetc(in), out) == EOF) fail_msg("cannot write %s", to);
    fclose(in);
    if (fclose(out) != 0) fail_msg("cannot write %s", to);
}

static long file_size(const char *file)
{
    struct stat st;
    if (stat(file, &st) != 0) fail_msg("cannot stat %s", file);
    return (long)st.st_size;
}

/* ---- The HTTP server ---- */

typedef enum {
    SERVE_WHOLE,     /* 200, or 206 for `Range: bytes=N-` */
    SERVE_CUT_FIRST, /* the same, but the first response stops halfway and the connection closes */
    SERVE_NO_RANGES, /* always 200 and the whole file, as python's http.server does */
} serve_mode;

typedef struct server {
    pid_t pid;
    int port;
    char log[PATH_MAX]; /* one line per request: "GET PATH range=N" or "range=none" */
    char url[128];      /* where it serves the archive */
} server;

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w <= 0) return false;
        buf += w;
        len -= (size_t)w;
    }
    return true;
}

/* The request's head (up to the blank line) into buf, NUL-terminated; false if the client left. */
static bool read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0) return false;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n")) return true;
    }
    return false;
}

/* The N of "Range: bytes=N-", or -1 without one. */
static long range_start(const char *request)
{
    for (const char *p = request; (p = strchr(p, '\n')); p++)
        if (strncasecmp(p + 1, "range: bytes=", 13) == 0) return atol(p + 14);
    return -1;
}

static void serve_one(int fd, const char *body, long size, serve_mode mode, int nth, FILE *log)
{
    char request[8192], path[1024] = "", head[512];
    if (!read_request(fd, request, sizeof request)) return;
    sscanf(request, "GET %1023s", path);
    long from = range_start(request);
    fprintf(log, "GET %s range=%ld\n", path, from);
    fflush(log);
    if (strcmp(path, URL_PATH) != 0) {
        snprintf(head, sizeof head, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        send_all(fd, head, strlen(head));
        return;
    }
    if (mode == SERVE_NO_RANGES || from < 0) from = 0;
    if (from >= size) {
        snprintf(head, sizeof head, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%ld\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n", size);
        send_all(fd, head, strlen(head));
        return;
    }
    if (from > 0)
        snprintf(head, sizeof head, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %ld-%ld/%ld\r\n"
                 "Content-Length: %ld\r\nConnection: close\r\n\r\n", from, size - 1, size, size - from);
    else
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\nConnection: close\r\n\r\n", size);
    long len = size - from;
    if (mode == SERVE_CUT_FIRST && nth == 0) len /= 2; /* promised all, sends half */
    if (send_all(fd, head, strlen(head))) send_all(fd, body + from, (size_t)len);
}

/* The child: answers one connection at a time until it is killed: by server_stop, or with the
 * test program, however that ends (a failed test jumps past server_stop; a server left running
 * would hold the caller's output pipe open). */
static void serve_forever(int listener, pid_t parent, const char *file, const char *log_file, serve_mode mode)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
    FILE *f = fopen(file, "rb"), *log = fopen(log_file, "w");
    long size = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *body = size > 0 ? malloc((size_t)size) : NULL;
    if (!log || !body || fseek(f, 0, SEEK_SET) != 0 || fread(body, 1, (size_t)size, f) != (size_t)size) _exit(1);
    fclose(f);
    for (int nth = 0;; nth++) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) _exit(1);
        serve_one(fd, body, size, mode, nth, log);
        close(fd);
    }
}

/* Serves FILE at s->url from a child process, on an ephemeral port of 127.0.0.1. */
static void server_start(server *s, const char *file, const char *work, serve_mode mode)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        fail_msg("cannot listen on 127.0.0.1: %s", strerror(errno));
    s->port = ntohs(a.sin_port);
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d" URL_PATH, s->port);
    /* The log lives outside the work folder, which must stay empty after a refusal. */
    if (snprintf(s->log, sizeof s->log, "%s.log", work) >= (int)sizeof s->log) fail_msg("path too long");
    fflush(NULL); /* the child must not flush the parent's buffers again */
    pid_t parent = getpid();
    s->pid = fork();
    if (s->pid < 0) fail_msg("cannot fork: %s", strerror(errno));
    if (s->pid == 0) serve_forever(fd, parent, file, s->log, mode);
    close(fd);
}

static void server_stop(server *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    unlink(s->log);
}

/* The requests it logged so far, one per line, into buf. */
static const char *server_log(const server *s, char *buf, size_t cap)
{
    FILE *f = fopen(s->log, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    return buf;
}

/* ---- The plugin, called as the host calls it ---- */

typedef struct data_set {
    data_rig rig;          /* cifar10, called as the host calls it (tests/helpers.h) */
    char work[PATH_MAX];   /* a fresh folder for this test, empty at the start */
    char parent[PATH_MAX]; /* WORK/data: not there yet, the download makes it */
    char path[PATH_MAX];   /* WORK/data/cifar-10-batches-bin: data.path */
} data_set;

/* cifar10 with download = true from URL (or "" until a server says where) into a new work
 * folder; ten images per split to read, which is enough to see the files are usable. */
static void cifar10_load(data_set *ds, const fixture *fx, const char *url)
{
    memset(ds, 0, sizeof *ds);
    join(ds->work, fx->root, "work-XXXXXX");
    if (!mkdtemp(ds->work)) fail_msg("cannot make a work folder in %s", fx->root);
    join(ds->parent, ds->work, "data");
    join(ds->path, ds->parent, "cifar-10-batches-bin");
    data_rig_load(&ds->rig, "cifar10");
    test_arg(ds->rig.desc, ds->rig.args, "path")->s = ds->path;
    test_arg(ds->rig.desc, ds->rig.args, "train_limit")->i = 10;
    test_arg(ds->rig.desc, ds->rig.args, "test_limit")->i = 10;
    test_arg(ds->rig.desc, ds->rig.args, "download")->b = true;
    test_arg(ds->rig.desc, ds->rig.args, "url")->s = url;
    test_arg(ds->rig.desc, ds->rig.args, "md5")->s = fx->good_md5;
}

static void data_create(data_set *ds)
{
    ds->rig.ctx.err[0] = '\0';
    data_rig_create(&ds->rig, 1);
    assert_int_equal(ds->rig.info.size[RX_TRAIN] + ds->rig.info.size[RX_VALID], 10);
    assert_int_equal(ds->rig.info.size[RX_TEST], 10);
    assert_string_equal(ds->rig.info.class_names[9], "truck");
    ds->rig.desc->data.destroy(ds->rig.self);
    ds->rig.self = NULL;
}

/* create must fail with a one-line message that says WANT. */
static void expect_refusal(data_set *ds, const char *want)
{
    data_rig_refused(&ds->rig, want);
    if (strchr(ds->rig.ctx.err, '\n')) fail_msg("error '%s' is not one line", ds->rig.ctx.err);
}

/* ... and leave the work folder as empty as it was. */
static void data_create_refused(data_set *ds, const char *want)
{
    expect_refusal(ds, want);
    if (count_entries(ds->work) != 0) fail_msg("a refusal left something in %s", ds->work);
}

static void data_close(data_set *ds)
{
    plugin_unload(&ds->rig.pl);
    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", ds->work);
    run_shell(command);
}

/* The data set in place is the source, file for file, and nothing is left beside it but the
 * archive (a copy of SERVED), kept for next time. */
static void assert_arrived(const data_set *ds, const fixture *fx, const char *served)
{
    for (int i = 0; i < NBATCHES; i++) {
        char a[PATH_MAX], b[PATH_MAX];
        join(a, ds->path, batch_files[i]);
        join(b, fx->src, batch_files[i]);
        assert_same_file(a, b);
    }
    char archive[PATH_MAX];
    join(archive, ds->parent, ARCHIVE);
    assert_same_file(archive, served);
    assert_int_equal(count_entries(ds->parent), 2); /* the folder and the archive: no .part, no temporary folder */
    struct stat st;
    assert_int_equal(stat(ds->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
}

/* ---- Tests ---- */

static void test_downloads_checks_and_extracts(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->dense, ds.work, SERVE_WHOLE);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = fx->dense_md5;
    data_create(&ds);
    assert_arrived(&ds, fx, fx->dense);

    /* Once there, the files are used as they are: no network needed, nothing requested. */
    char log[4096];
    assert_int_equal(count_lines(server_log(&s, log, sizeof log)), 1);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = DEAD_URL;
    data_create(&ds);
    server_stop(&s);
    data_close(&ds);
}

static void test_resumes_a_cut_connection(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->dense, ds.work, SERVE_CUT_FIRST);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = fx->dense_md5;
    data_create(&ds);
    assert_arrived(&ds, fx, fx->dense);

    char log[4096], want[128];
    snprintf(want, sizeof want, "GET " URL_PATH " range=-1\nGET " URL_PATH " range=%ld\n", file_size(fx->dense) / 2);
    assert_string_equal(server_log(&s, log, sizeof log), want);
    server_stop(&s);
    data_close(&ds);
}

/* What a run killed mid-download leaves, the next run continues. */
static void test_resumes_an_earlier_part(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->good, ds.work, SERVE_WHOLE);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    char part[PATH_MAX];
    join(part, ds.parent, ARCHIVE ".part");
    assert_int_equal(mkdir(ds.parent, 0755), 0);
    long third = file_size(fx->good) / 3;
    copy_head(fx->good, part, third);
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);

    char log[4096], want[128];
    snprintf(want, sizeof want, "GET " URL_PATH " range=%ld\n", third);
    assert_string_equal(server_log(&s, log, sizeof log), want);
    server_stop(&s);
    data_close(&ds);
}

/* A .part that is whole already (the run stopped between download and rename) needs no network. */
static void test_finishes_a_whole_part(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, DEAD_URL);
    char part[PATH_MAX];
    join(part, ds.parent, ARCHIVE ".part");
    assert_int_equal(mkdir(ds.parent, 0755), 0);
    copy_head(fx->good, part, file_size(fx->good));
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);
    data_close(&ds);
}

/* A server that ignores ranges (python -m http.server) sends it all again: the .part starts over. */
static void test_starts_over_without_ranges(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->good, ds.work, SERVE_NO_RANGES);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    char part[PATH_MAX];
    join(part, ds.parent, ARCHIVE ".part");
    assert_int_equal(mkdir(ds.parent, 0755), 0);
    copy_head(fx->good, part, file_size(fx->good) / 3);
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);
    server_stop(&s);
    data_close(&ds);
}

static void test_wrong_md5_deletes_the_download(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->good, ds.work, SERVE_WHOLE);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = "0123456789abcdef0123456789abcdef";
    char want[256];
    snprintf(want, sizeof want, "%s: md5 is %s, expected 0123456789abcdef0123456789abcdef; the download was deleted",
             s.url, fx->good_md5);
    data_create_refused(&ds, want);
    server_stop(&s);
    data_close(&ds);
}

/* sha256, when given, is checked instead of md5 (here the official md5, which cannot match). */
static void test_sha256_replaces_md5(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    char url[PATH_MAX + 8];
    snprintf(url, sizeof url, "file://%s", fx->good);
    cifar10_load(&ds, fx, url);
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = "c32a1d4ab5d03f1284b67883e8d87530";
    test_arg(ds.rig.desc, ds.rig.args, "sha256")->s = "0000000000000000000000000000000000000000000000000000000000000000";
    char want[256];
    snprintf(want, sizeof want, "sha256 is %s, expected 0000", fx->good_sha256);
    data_create_refused(&ds, want);

    test_arg(ds.rig.desc, ds.rig.args, "sha256")->s = fx->good_sha256;
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);
    data_close(&ds);
}

static void test_file_url(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    char url[PATH_MAX + 8];
    snprintf(url, sizeof url, "file://%s", fx->good);
    cifar10_load(&ds, fx, url);
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);
    data_close(&ds);
}

/* An archive that checks out but lacks a file is refused before anything moves into place. */
static void test_archive_missing_a_member(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    char url[PATH_MAX + 8];
    snprintf(url, sizeof url, "file://%s", fx->no_test);
    cifar10_load(&ds, fx, url);
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = fx->no_test_md5;
    data_create_refused(&ds, ARCHIVE " lacks cifar-10-batches-bin/test_batch.bin");
    data_close(&ds);
}

static void test_no_network(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, DEAD_URL);
    data_create_refused(&ds, "cannot download " DEAD_URL ": ");
    data_create_refused(&ds, "(no network?); put " ARCHIVE ", downloaded by hand, in ");
    data_create_refused(&ds, "(see README: getting CIFAR-10)");
    data_close(&ds);
}

static void test_http_error(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->good, ds.work, SERVE_WHOLE);
    char url[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/elsewhere.tar.gz", s.port);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = url;
    data_create_refused(&ds, "404");
    server_stop(&s);
    data_close(&ds);
}

/* Without network, an archive put beside the folder by hand is checked and extracted, and kept. */
static void test_archive_put_by_hand(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, DEAD_URL);
    char archive[PATH_MAX], command[3 * PATH_MAX];
    join(archive, ds.parent, ARCHIVE);
    assert_int_equal(mkdir(ds.parent, 0755), 0);
    snprintf(command, sizeof command, "cp '%s' '%s'", fx->good, archive);
    run_shell(command);
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);

    /* One that does not check out is refused and left where it is: it is not the plugin's. */
    snprintf(command, sizeof command, "rm -rf '%s' && cp '%s' '%s'", ds.path, fx->no_test, archive);
    run_shell(command);
    char want[256];
    snprintf(want, sizeof want, "%s: md5 is %s, expected %s; if it is a copy from elsewhere", archive,
             fx->no_test_md5, fx->good_md5);
    expect_refusal(&ds, want);
    assert_int_equal(count_entries(ds.parent), 1);
    assert_true(exists(archive));
    data_close(&ds);
}

/* A FIFO where the archive or its .part is expected is refused, not waited on for ever. */
static void test_fifo_archive_is_refused(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, DEAD_URL);
    char archive[PATH_MAX], part[PATH_MAX + 8], want[PATH_MAX + 64];
    join(archive, ds.parent, ARCHIVE);
    snprintf(part, sizeof part, "%s.part", archive);
    assert_int_equal(mkdir(ds.parent, 0755), 0);
    alarm(20); /* a blocking open would hang the suite: end it instead */
    assert_int_equal(mkfifo(archive, 0644), 0);
    snprintf(want, sizeof want, "%s: is a FIFO, expected a regular file", archive);
    expect_refusal(&ds, want);
    assert_int_equal(unlink(archive), 0);
    assert_int_equal(mkfifo(part, 0644), 0);
    snprintf(want, sizeof want, "%s: is a FIFO, expected a regular file", part);
    expect_refusal(&ds, want);
    alarm(0);
    data_close(&ds);
}

static void test_download_off(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    server s;
    cifar10_load(&ds, fx, "");
    server_start(&s, fx->good, ds.work, SERVE_WHOLE);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = s.url;
    test_arg(ds.rig.desc, ds.rig.args, "download")->b = false;
    data_create_refused(&ds, "batches.meta.txt not found in ");
    char log[64];
    assert_string_equal(server_log(&s, log, sizeof log), "");
    server_stop(&s);
    data_close(&ds);
}

/* A folder that has some files and lacks others is the user's: it is neither replaced nor added to. */
static void test_keeps_an_incomplete_folder(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, DEAD_URL);
    char command[PATH_MAX + 64];
    snprintf(command, sizeof command, "mkdir -p '%s' && touch '%s/notes.txt'", ds.path, ds.path);
    run_shell(command);
    expect_refusal(&ds, "lacks data_batch_1.bin but holds other files, so the download will not replace it");
    assert_int_equal(count_entries(ds.path), 1);
    assert_int_equal(count_entries(ds.parent), 1);

    /* An empty folder is fine: it is replaced. */
    snprintf(command, sizeof command, "rm '%s/notes.txt'", ds.path);
    run_shell(command);
    char url[PATH_MAX + 8];
    snprintf(url, sizeof url, "file://%s", fx->good);
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = url;
    data_create(&ds);
    assert_arrived(&ds, fx, fx->good);
    data_close(&ds);
}

static void test_refuses_bad_arguments(void **state)
{
    const fixture *fx = *state;
    data_set ds;
    cifar10_load(&ds, fx, "ftp://example.org/" ARCHIVE);
    data_create_refused(&ds, "url must start with http://, https:// or file://, got 'ftp://example.org/");
    test_arg(ds.rig.desc, ds.rig.args, "url")->s = DEAD_URL;
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = "xyz";
    data_create_refused(&ds, "md5 must be 32 hexadecimal digits, got 'xyz'");
    test_arg(ds.rig.desc, ds.rig.args, "md5")->s = "";
    data_create_refused(&ds, "download = true needs md5 or sha256");
    test_arg(ds.rig.desc, ds.rig.args, "sha256")->s = "abc";
    data_create_refused(&ds, "sha256 must be 64 hexadecimal digits, got 'abc'");
    data_close(&ds);
}

/* ---- Set-up ---- */

static int group_setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    fx->root = test_tmpdir();
    char command[4 * PATH_MAX];
    join(fx->src, fx->root, "src/cifar-10-batches-bin");
    snprintf(command, sizeof command, "mkdir -p '%s'", fx->src);
    run_shell(command);
    write_source(fx->src);
    join(fx->dense, fx->root, "dense.tar.gz");
    join(fx->good, fx->root, "good.tar.gz");
    join(fx->no_test, fx->root, "no-test.tar.gz");
    snprintf(command, sizeof command,
             "cd '%s/src' && tar -czf '%s' cifar-10-batches-bin && tar --sparse -czf '%s' cifar-10-batches-bin && "
             "tar --sparse --exclude=test_batch.bin -czf '%s' cifar-10-batches-bin",
             fx->root, fx->dense, fx->good, fx->no_test);
    run_shell(command);
    hash_file("md5sum", fx->dense, fx->dense_md5, sizeof fx->dense_md5);
    hash_file("md5sum", fx->good, fx->good_md5, sizeof fx->good_md5);
    hash_file("sha256sum", fx->good, fx->good_sha256, sizeof fx->good_sha256);
    hash_file("md5sum", fx->no_test, fx->no_test_md5, sizeof fx->no_test_md5);
    *state = fx;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *fx = *state;
    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", fx->root);
    int rc = system(command);
    free(fx->root);
    free(fx);
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_downloads_checks_and_extracts),
        cmocka_unit_test(test_resumes_a_cut_connection),
        cmocka_unit_test(test_resumes_an_earlier_part),
        cmocka_unit_test(test_finishes_a_whole_part),
        cmocka_unit_test(test_starts_over_without_ranges),
        cmocka_unit_test(test_wrong_md5_deletes_the_download),
        cmocka_unit_test(test_sha256_replaces_md5),
        cmocka_unit_test(test_file_url),
        cmocka_unit_test(test_archive_missing_a_member),
        cmocka_unit_test(test_no_network),
        cmocka_unit_test(test_http_error),
        cmocka_unit_test(test_archive_put_by_hand),
        cmocka_unit_test(test_fifo_archive_is_refused),
        cmocka_unit_test(test_download_off),
        cmocka_unit_test(test_keeps_an_incomplete_folder),
        cmocka_unit_test(test_refuses_bad_arguments),
    };
    return cmocka_run_group_tests_name("download", tests, group_setup, group_teardown) != 0;
}
