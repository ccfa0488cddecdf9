/* download.c: getting a data set's archive onto the disk for cifar10 (download.h says what each
 * function does), so that a dropped connection, a bad mirror or a crash never leaves a corrupt
 * or half-extracted data set behind: libcurl fetches into a `.part` file, continued with HTTP
 * range requests and retried with backoff (a progress bar on a terminal; Ctrl-C ends it at once);
 * OpenSSL's EVP computes digests; libarchive extracts into a temporary folder that is checked,
 * flushed and only then renamed into place. The plugin links -lcurl -larchive -lcrypto
 * (PLUGIN_LIBS_cifar10 in the Makefile). Failures are one line through rx_fail; the only output
 * is progress, on stderr. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "download.h"
#include "regular.h"

#define DL_STALLED_TRIES 5    /* tries in a row that add nothing before giving up */
#define DL_CONNECT_SECS  30L
#define DL_STALL_SECS    60L  /* a transfer below 1 byte/s for this long is dropped and retried */
#define DL_REDRAW_SECS   0.25 /* the bar is redrawn at most this often */
#define DL_BAR_WIDTH     30
#define DL_BLOCK         (1 << 16)

/* ---- Small file and folder helpers ---- */

static double dl_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* DIR/NAME into out (PATH_MAX bytes); fails when it does not fit. */
int dl_join(rx_ctx *ctx, char *out, const char *dir, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
        return rx_fail(ctx, "path %s/%s is too long", dir, name);
    return 0;
}

/* Size of an open file, or -1. */
static int64_t dl_fd_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Flushes a folder's entries (a file created or renamed in it) to disk. */
static int dl_sync_dir(rx_ctx *ctx, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return rx_fail(ctx, "%s: cannot open: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : rx_fail(ctx, "%s: cannot flush to disk: %s", dir, strerror(errno));
    close(fd); /* read-only: nothing left to report */
    return rc;
}

/* Removes a folder of plain files that this code wrote (an abandoned extraction). Best effort: it
 * runs on a failure path, where the first failure is the one worth reporting. */
static void dl_remove_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Removes the folders dl_make_dirs created for PATH, innermost first (those it did not get to
 * are skipped). rmdir only takes empty folders, so whatever something else put there stays, and
 * so do the folders holding it. */
void dl_unmake_dirs(const char *path, size_t made)
{
    if (!made) return;
    char prefix[PATH_MAX];
    snprintf(prefix, sizeof prefix, "%s", path);
    for (size_t len = strlen(prefix); len >= made;) {
        prefix[len] = '\0';
        if (rmdir(prefix) != 0 && errno != ENOENT) return;
        while (len > 0 && prefix[len - 1] != '/') len--;
        while (len > 0 && prefix[len - 1] == '/') len--;
    }
}

/* mkdir -p PATH. *made: length of the outermost prefix of PATH this call created, 0 when it
 * created nothing, so that dl_unmake_dirs can take exactly those away again. */
int dl_make_dirs(rx_ctx *ctx, const char *path, size_t *made)
{
    char prefix[PATH_MAX];
    size_t len = strlen(path);
    *made = 0;
    if (len >= sizeof prefix) return rx_fail(ctx, "path %s is too long", path);
    memcpy(prefix, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (prefix[i] != '/' && prefix[i] != '\0') continue;
        char c = prefix[i];
        prefix[i] = '\0';
        if (mkdir(prefix, 0777) == 0) {
            if (!*made) *made = i;
        } else if (errno != EEXIST) {
            rx_fail(ctx, "cannot create folder %s: %s", prefix, strerror(errno));
            dl_unmake_dirs(path, *made);
            *made = 0;
            return -1;
        }
        prefix[i] = c;
    }
    return 0;
}

/* ---- dl_fetch: URL -> .part, resumed, retried ---- */

/* One fetch: where the bytes go and what the progress bar needs. */
typedef struct dl_fetch_state {
    int fd;                 /* the .part file, opened for appending */
    int write_errno;        /* why writing it failed, 0 if it did not */
    const char *label;      /* the name shown before the bar */
    bool tty;               /* stderr is a terminal: draw the bar */
    bool drawn;             /* a bar is on screen: end it before printing a line */
    int64_t offset;         /* bytes the .part held when this try began */
    int64_t received;       /* bytes written by all tries together */
    double start, last;     /* when this try began, when the bar was last drawn */
} dl_fetch_state;

static size_t dl_on_data(char *buf, size_t size, size_t n, void *user)
{
    dl_fetch_state *s = user;
    size_t len = size * n, done = 0; /* libcurl: size is always 1 */
    while (done < len) {
        ssize_t w = write(s->fd, buf + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s->write_errno = w < 0 ? errno : EIO;
            return done; /* anything short of len makes libcurl stop with CURLE_WRITE_ERROR */
        }
        done += (size_t)w;
        s->received += w;
    }
    return len;
}

/* "\rcifar-10-binary.tar.gz [#####.....]  45%   73.2 / 162.6 MB  12.3 MB/s", or without the bar
 * and the total when the server does not say how much is coming. */
static void dl_draw_bar(dl_fetch_state *s, int64_t have, int64_t total)
{
    double secs = dl_seconds() - s->start;
    double rate = secs > 0 ? (double)(have - s->offset) / secs : 0;
    if (total > 0) {
        char bar[DL_BAR_WIDTH + 1];
        int filled = (int)(DL_BAR_WIDTH * (have > total ? total : have) / total);
        memset(bar, '#', (size_t)filled);
        memset(bar + filled, '.', (size_t)(DL_BAR_WIDTH - filled));
        bar[DL_BAR_WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %3d%% %7.1f / %.1f MB %6.1f MB/s ", s->label, bar,
                (int)(100 * have / total), (double)have / 1e6, (double)total / 1e6, rate / 1e6);
    } else {
        fprintf(stderr, "\r%s %7.1f MB %6.1f MB/s ", s->label, (double)have / 1e6, rate / 1e6);
    }
    s->drawn = true;
}

/* Ends the bar's line so that the next message starts on its own. */
static void dl_end_bar(dl_fetch_state *s)
{
    if (s->drawn) fputc('\n', stderr);
    s->drawn = false;
}

static int dl_on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    dl_fetch_state *s = user;
    double now = dl_seconds();
    if (!s->tty || now - s->last < DL_REDRAW_SECS) return 0;
    s->last = now;
    /* libcurl counts this try only: the part from earlier tries comes on top. */
    dl_draw_bar(s, s->offset + (int64_t)dlnow, dltotal > 0 ? s->offset + (int64_t)dltotal : 0);
    return 0;
}

/* A handle for URL that calls back into s; NULL when libcurl refuses an option. */
static CURL *dl_new_handle(const char *url, dl_fetch_state *s, char *curl_err)
{
    CURL *curl = curl_easy_init();
    if (!curl) return NULL;
    /* Redirects may not lead from the web to the local disk. */
    if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https,file") != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "runexp") != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, DL_CONNECT_SECS) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, DL_STALL_SECS) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, dl_on_data) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, s) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, dl_on_progress) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, s) != CURLE_OK ||
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L) != CURLE_OK) {
        curl_easy_cleanup(curl);
        return NULL;
    }
    return curl;
}

/* Worth another try: the connection broke or timed out, or the server is briefly unwell. Failing
 * to connect at all counts only once this fetch has received something: before that it means no
 * network or a wrong address, which waiting does not mend. */
static bool dl_transient(CURLcode rc, long status, bool got_some)
{
    switch (rc) {
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return got_some;
    case CURLE_HTTP_RETURNED_ERROR:
        return status == 408 || status == 429 || status >= 500;
    default:
        return false;
    }
}

/* The server cannot continue from what the .part holds: it ignores ranges, or the .part is as
 * long as the file or longer (a run stopped after the last byte, or another file). */
static bool dl_cannot_resume(CURLcode rc, long status)
{
    return rc == CURLE_RANGE_ERROR || rc == CURLE_BAD_DOWNLOAD_RESUME ||
           (rc == CURLE_HTTP_RETURNED_ERROR && status == 416);
}

static const char *dl_reason(CURLcode rc, const char *curl_err)
{
    return curl_err[0] ? curl_err : curl_easy_strerror(rc);
}

/* Tries until the whole file is in the .part. A try that adds bytes is followed at once by
 * another from the new end; tries that add nothing wait 1, 2, 4, ... seconds, and
 * DL_STALLED_TRIES of them in a row end it. A server that cannot continue the .part gets it
 * emptied and sends the file from its start. */
static int dl_fetch_with_retries(rx_ctx *ctx, CURL *curl, dl_fetch_state *s, const char *url, const char *part,
                                 char *curl_err)
{
    bool got_some = false;
    for (int stalled = 0, restarts = 0;;) {
        int64_t before = dl_fd_size(s->fd);
        if (before < 0) return rx_fail(ctx, "%s: cannot stat: %s", part, strerror(errno));
        if (curl_easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)before) != CURLE_OK)
            return rx_fail(ctx, "cannot download %s: libcurl refused the resume offset", url);
        s->offset = before;
        s->start = dl_seconds();
        curl_err[0] = '\0';
        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status); /* stays 0 where there was none */
        if (rc == CURLE_OK && s->tty) dl_draw_bar(s, dl_fd_size(s->fd), dl_fd_size(s->fd));
        dl_end_bar(s);
        if (rc == CURLE_OK) return 0;
        if (s->write_errno) return rx_fail(ctx, "cannot write %s: %s", part, strerror(s->write_errno));

        int64_t after = dl_fd_size(s->fd);
        if (dl_cannot_resume(rc, status)) {
            /* Bounded: a server that ignores ranges and keeps dropping the connection never finishes. */
            if (++restarts > DL_STALLED_TRIES)
                return rx_fail(ctx, "cannot download %s: %s, %d times", url, dl_reason(rc, curl_err), restarts);
            if (ftruncate(s->fd, 0) != 0) return rx_fail(ctx, "%s: cannot truncate: %s", part, strerror(errno));
            fprintf(stderr, "%s: the server cannot continue from the %.1f MB in %s (%s); starting over\n",
                    s->label, (double)after / 1e6, part, dl_reason(rc, curl_err));
            continue;
        }
        got_some = got_some || after > before;
        stalled = after > before ? 0 : stalled + 1;
        if (!dl_transient(rc, status, got_some)) {
            bool no_network = rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT ||
                              rc == CURLE_COULDNT_RESOLVE_PROXY;
            return rx_fail(ctx, "cannot download %s: %s%s", url, dl_reason(rc, curl_err),
                           no_network ? " (no network?)" : "");
        }
        if (stalled >= DL_STALLED_TRIES)
            return rx_fail(ctx, "cannot download %s: %s, %d tries in a row without progress; the %.1f MB so far "
                           "stay in %s for the next run to continue", url, dl_reason(rc, curl_err), stalled,
                           (double)after / 1e6, part);
        unsigned wait = stalled ? 1u << (stalled - 1) : 0;
        fprintf(stderr, "%s: download interrupted at %.1f MB (%s); continuing in %u s\n", s->label,
                (double)after / 1e6, dl_reason(rc, curl_err), wait);
        if (wait) sleep(wait); /* woken early by a signal: then it is only a shorter wait */
    }
}

/* The host defers SIGINT and SIGTERM to the end of its current batch, for a clean stop. A download
 * needs none (the next run continues its .part), so while one runs they end the process at once,
 * as users expect of Ctrl-C. A signal the process ignores (nohup, a background job) stays ignored. */
typedef struct dl_stop_signals {
    struct sigaction saved[2];
    bool replaced[2];
} dl_stop_signals;

static const int dl_stop_signal[2] = { SIGINT, SIGTERM };

static void dl_stop_signals_default(dl_stop_signals *s)
{
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigemptyset(&dfl.sa_mask);
    for (int i = 0; i < 2; i++) {
        /* Should sigaction fail, the signal keeps its handler: the download works all the same. */
        s->replaced[i] = sigaction(dl_stop_signal[i], NULL, &s->saved[i]) == 0 &&
                         s->saved[i].sa_handler != SIG_IGN && sigaction(dl_stop_signal[i], &dfl, NULL) == 0;
    }
}

static void dl_stop_signals_restore(const dl_stop_signals *s)
{
    for (int i = 0; i < 2; i++)
        if (s->replaced[i]) sigaction(dl_stop_signal[i], &s->saved[i], NULL); /* it was in place a moment ago */
}

/* Fetches URL into PART, continuing from what PART already holds. On failure PART keeps what came,
 * for the next run to continue from, or is removed if it holds nothing. */
int dl_fetch(rx_ctx *ctx, const char *url, const char *part, const char *label)
{
    dl_fetch_state s = { .label = label, .tty = isatty(STDERR_FILENO) != 0 };
    double start = dl_seconds();
    s.fd = open_regular(ctx, part, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (s.fd < 0) return -1;
    int64_t had = dl_fd_size(s.fd);
    if (had > 0)
        fprintf(stderr, "%s: continuing the download of %s into %s (%.1f MB there)\n", label, url, part, (double)had / 1e6);
    else
        fprintf(stderr, "%s: downloading %s into %s\n", label, url, part);
    char curl_err[CURL_ERROR_SIZE];
    CURL *curl = dl_new_handle(url, &s, curl_err);
    dl_stop_signals stop;
    dl_stop_signals_default(&stop);
    int rc = curl ? dl_fetch_with_retries(ctx, curl, &s, url, part, curl_err)
                  : rx_fail(ctx, "cannot download %s: libcurl could not be set up", url);
    dl_stop_signals_restore(&stop);
    curl_easy_cleanup(curl);
    int64_t bytes = dl_fd_size(s.fd);
    if (close(s.fd) != 0 && rc == 0) rc = rx_fail(ctx, "cannot write %s: %s", part, strerror(errno));
    if (rc != 0 && bytes == 0) unlink(part); /* nothing worth keeping; the failure is already reported */
    if (rc == 0) fprintf(stderr, "%s: downloaded %.1f MB in %.1f s\n", label, (double)s.received / 1e6, dl_seconds() - start);
    return rc;
}

/* ---- dl_digest ---- */

/* The ALGO ("md5", "sha256") digest of FILE as lowercase hex into hex (2 * EVP_MAX_MD_SIZE + 1). */
int dl_digest(rx_ctx *ctx, const char *file, const char *algo, char *hex)
{
    const EVP_MD *md = EVP_get_digestbyname(algo);
    if (!md) return rx_fail(ctx, "%s is not available in this OpenSSL", algo);
    FILE *f = fopen_regular(ctx, file);
    if (!f) return -1;
    EVP_MD_CTX *mdc = EVP_MD_CTX_new();
    int rc = 0;
    if (!mdc || EVP_DigestInit_ex(mdc, md, NULL) != 1) rc = rx_fail(ctx, "%s is not available in this OpenSSL", algo);
    unsigned char buf[DL_BLOCK];
    for (size_t n; rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0;)
        if (EVP_DigestUpdate(mdc, buf, n) != 1) rc = rx_fail(ctx, "%s: computing its %s failed", file, algo);
    if (rc == 0 && ferror(f)) rc = rx_fail(ctx, "%s: read error", file);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (rc == 0 && EVP_DigestFinal_ex(mdc, out, &len) != 1) rc = rx_fail(ctx, "%s: computing its %s failed", file, algo);
    for (unsigned i = 0; rc == 0 && i < len; i++) snprintf(hex + 2 * i, 3, "%02x", out[i]);
    EVP_MD_CTX_free(mdc);
    fclose(f); /* read-only */
    return rc;
}

/* ---- dl_extract_into_place ---- */

/* The name of an archive entry below FOLDER/ ("./" prefixes allowed), or NULL for anything else:
 * other folders, deeper levels, "." and "..". Flat names cannot reach outside the destination. */
static const char *dl_member_name(const char *path, const char *folder)
{
    while (path[0] == '.' && path[1] == '/') path += 2;
    size_t len = strlen(folder);
    if (strncmp(path, folder, len) != 0 || path[len] != '/') return NULL;
    const char *name = path + len + 1;
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return NULL;
    return name;
}

/* Writes all of pwrite's bytes (a block may come back short). */
static int dl_pwrite_all(int fd, const char *buf, size_t len, off_t offset)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, buf, len, offset);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        len -= (size_t)w;
        offset += w;
    }
    return 0;
}

/* The current entry's data into DEST/NAME, flushed to disk. Blocks come with their offsets, so
 * sparse entries come out right; the final size covers a trailing hole. */
static int dl_extract_member(rx_ctx *ctx, struct archive *a, struct archive_entry *e, const char *archive,
                             const char *dest, const char *name)
{
    char file[PATH_MAX];
    if (dl_join(ctx, file, dest, name) != 0) return -1;
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return rx_fail(ctx, "cannot write %s: %s", file, strerror(errno));
    const void *buf;
    size_t len;
    la_int64_t offset;
    int r = ARCHIVE_EOF, rc = 0;
    while (rc == 0 && (r = archive_read_data_block(a, &buf, &len, &offset)) == ARCHIVE_OK)
        if (dl_pwrite_all(fd, buf, len, (off_t)offset) != 0) rc = rx_fail(ctx, "cannot write %s: %s", file, strerror(errno));
    if (rc == 0 && r != ARCHIVE_EOF) rc = rx_fail(ctx, "%s: %s: %s", archive, name, archive_error_string(a));
    if (rc == 0 && archive_entry_size_is_set(e) && ftruncate(fd, (off_t)archive_entry_size(e)) != 0)
        rc = rx_fail(ctx, "cannot write %s: %s", file, strerror(errno));
    if (rc == 0 && fsync(fd) != 0) rc = rx_fail(ctx, "cannot flush %s to disk: %s", file, strerror(errno));
    if (close(fd) != 0 && rc == 0) rc = rx_fail(ctx, "cannot write %s: %s", file, strerror(errno));
    return rc;
}

/* The regular files directly inside FOLDER/ of ARCHIVE (tar, plain or gzipped), flat into DEST;
 * everything else in the archive is skipped. */
static int dl_extract_folder(rx_ctx *ctx, const char *archive, const char *folder, const char *dest)
{
    int fd = open_regular(ctx, archive, O_RDONLY, 0);
    if (fd < 0) return -1;
    struct archive *a = archive_read_new();
    if (!a) return close(fd), rx_fail(ctx, "%s: out of memory", archive);
    int rc = 0;
    if (archive_read_support_filter_gzip(a) != ARCHIVE_OK || archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_open_fd(a, fd, DL_BLOCK) != ARCHIVE_OK)
        rc = rx_fail(ctx, "%s: %s", archive, archive_error_string(a));
    struct archive_entry *e;
    int r = ARCHIVE_EOF;
    /* ARCHIVE_WARN: the entry is readable, something minor about its header was not. */
    while (rc == 0 && ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
        const char *name = dl_member_name(archive_entry_pathname(e), folder);
        if (name && archive_entry_filetype(e) == AE_IFREG) rc = dl_extract_member(ctx, a, e, archive, dest, name);
    }
    if (rc == 0 && r != ARCHIVE_EOF) rc = rx_fail(ctx, "%s: %s (a damaged archive?)", archive, archive_error_string(a));
    archive_read_free(a); /* reading only: nothing to lose */
    close(fd);
    return rc;
}

/* FOLDER/ of ARCHIVE becomes the folder DEST: extracted into a temporary folder beside it,
 * checked, flushed to disk and renamed, so DEST is either absent (or the empty folder it was) or
 * complete, whenever the process stops. DEST may be an empty folder (rename replaces it). */
int dl_extract_into_place(rx_ctx *ctx, const char *archive, const char *folder, const char *dest,
                          const char *parent, dl_check_fn check)
{
    char tmp[PATH_MAX];
    const char *base = strrchr(dest, '/') ? strrchr(dest, '/') + 1 : dest;
    if (snprintf(tmp, sizeof tmp, "%s/.%s.extracting-XXXXXX", parent, base) >= (int)sizeof tmp)
        return rx_fail(ctx, "path %s is too long", dest);
    if (!mkdtemp(tmp)) return rx_fail(ctx, "cannot create a folder in %s: %s", parent, strerror(errno));
    int rc = dl_extract_folder(ctx, archive, folder, tmp);
    if (rc == 0) rc = check(ctx, tmp, archive);
    /* mkdtemp makes the folder private; the data set is for whoever can read its parent. */
    if (rc == 0 && chmod(tmp, 0755) != 0) rc = rx_fail(ctx, "%s: cannot chmod: %s", tmp, strerror(errno));
    if (rc == 0) rc = dl_sync_dir(ctx, tmp);
    if (rc == 0 && rename(tmp, dest) != 0) rc = rx_fail(ctx, "cannot move %s to %s: %s", tmp, dest, strerror(errno));
    if (rc != 0) {
        dl_remove_flat_dir(tmp);
        return -1;
    }
    return dl_sync_dir(ctx, parent);
}
