/* tensorboard.c: TensorBoard's event files (see tensorboard.h). */
#include "tensorboard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "protobuf.h"

/* event.proto's field numbers: Event { double wall_time = 1; int64 step = 2; string
 * file_version = 3; Summary summary = 5; }, Summary { repeated Value value = 1; },
 * Summary.Value { string tag = 1; float simple_value = 2; } */
enum { EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5 };
enum { SUMMARY_VALUE = 1, VALUE_TAG = 1, VALUE_SIMPLE_VALUE = 2 };

uint32_t crc32c(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t crc = 0xffffffffu;
    /* Bit by bit: event files are small, and there is no table to keep. */
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

uint32_t crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

/* data as one TFRecord record. */
static void tfrecord(strbuf *b, const strbuf *data)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)data->len >> (8 * i));
    if (data->oom) b->oom = true;
    sb_append(b, len, sizeof len);
    pb_fixed32(b, crc32c_mask(crc32c(len, sizeof len)));
    if (data->len) sb_append(b, data->s, data->len);
    pb_fixed32(b, crc32c_mask(crc32c(data->s, data->len)));
}

void tb_scalar(strbuf *b, double wall_time, int64_t step, const char *tag, double value)
{
    strbuf v = { 0 }, summary = { 0 }, event = { 0 };
    pb_field_string(&v, VALUE_TAG, tag);
    pb_field_float(&v, VALUE_SIMPLE_VALUE, (float)value);
    pb_field_message(&summary, SUMMARY_VALUE, &v);
    pb_field_double(&event, EVENT_WALL_TIME, wall_time);
    pb_field_varint(&event, EVENT_STEP, (uint64_t)step);
    pb_field_message(&event, EVENT_SUMMARY, &summary);
    tfrecord(b, &event);
    sb_free(&v);
    sb_free(&summary);
    sb_free(&event);
}

/* The first record of every event file: which format the rest is in. */
static void tb_version(strbuf *b, double wall_time)
{
    strbuf event = { 0 };
    pb_field_double(&event, EVENT_WALL_TIME, wall_time);
    pb_field_string(&event, EVENT_FILE_VERSION, "brain.Event:2");
    tfrecord(b, &event);
    sb_free(&event);
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

#define EVENT_PREFIX "events.out.tfevents."

/* The name of this process's event file in dir: the one it began (".HOST.PID" after a stamp at
 * least `started`), or a new one whose stamp is past every other file's. TensorBoard reads a
 * folder's files in the order of their names, so a resumed run's file must sort after the
 * earlier ones; process ids do not, and two processes may start within a second. */
static int event_file_name(const char *dir, time_t started, char *name, size_t len, char *err)
{
    char mine[300] = ".localhost", host[256];
    if (gethostname(host, sizeof host) == 0 && memchr(host, '\0', sizeof host) && host[0] && !strchr(host, '/'))
        snprintf(mine, sizeof mine, ".%s", host);
    snprintf(mine + strlen(mine), sizeof mine - strlen(mine), ".%lld", (long long)getpid());
    DIR *d = opendir(dir);
    if (!d) return errorf(err, "%s: cannot list: %s", dir, strerror(errno));
    long long next = (long long)started, stamp;
    int used;
    for (struct dirent *e; (e = readdir(d));) {
        if (sscanf(e->d_name, EVENT_PREFIX "%10lld%n", &stamp, &used) != 1) continue;
        if (stamp >= (long long)started && strcmp(e->d_name + used, mine) == 0) {
            int cut = snprintf(name, len, "%s", e->d_name) >= (int)len; /* e lives until closedir */
            closedir(d);
            return cut ? errorf(err, "%s: name too long", dir) : 0;
        }
        if (stamp >= next) next = stamp + 1;
    }
    closedir(d);
    snprintf(name, len, EVENT_PREFIX "%010lld%s", next, mine);
    return 0;
}

/* Opens dir's event file for this process, for appending; *fresh: it is new. */
static int open_event_file(const char *dir, time_t started, char *path, bool *fresh, char *err)
{
    char name[400];
    if (make_dirs(dir, err) != 0 || event_file_name(dir, started, name, sizeof name, err) != 0) return -1;
    if (snprintf(path, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
        return errorf(err, "%s: path too long for an event file", dir);
    /* O_NONBLOCK: a FIFO put in the file's place is refused below, not waited on. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    struct stat st;
    if (fd < 0) return errorf(err, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errorf(err, "%s: not a regular file", path);
    }
    *fresh = st.st_size == 0;
    return fd;
}

int tb_append(const char *dir, time_t started, const strbuf *records, char *err)
{
    char path[PATH_MAX];
    bool fresh = false;
    if (records->oom) return errorf(err, "%s: out of memory writing TensorBoard events", dir);
    int fd = open_event_file(dir, started, path, &fresh, err);
    if (fd < 0) return -1;
    strbuf b = { 0 };
    if (fresh) tb_version(&b, (double)started);
    sb_append(&b, records->s, records->len);
    /* One write call for it all: a record a kill tears is the file's last, where TensorBoard's reader
     * stops; the resumed run writes a file of its own. */
    int rc = b.oom ? errorf(err, "%s: out of memory writing TensorBoard events", path) : 0;
    if (rc == 0 && (write_all(fd, b.s, b.len) != 0 || fsync(fd) != 0))
        rc = errorf(err, "%s: cannot write: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0) rc = errorf(err, "%s: cannot write: %s", path, strerror(errno));
    sb_free(&b);
    return rc;
}
