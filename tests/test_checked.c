/* test_checked.c: checked arithmetic (core/checked.h) at its edges and its one message, and the
 * sizes a user gives on the command line refused with that message, before any memory is
 * asked for: a huge data.batch_size, a huge epochs, `runexp check --batch=HUGE`. Each of these
 * crashed, wrapped or was blamed on the wrong key before; each must exit 1 with one line naming
 * the key and the value, under the sanitizers too, and leave no run folder behind. */
#include "helpers.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checked.h"

static void test_multiply_and_add(void **state)
{
    size_t z;
    int64_t i;
    assert_true(checked_mul(SIZE_MAX, 1, &z) && z == SIZE_MAX);
    assert_false(checked_mul(SIZE_MAX / 2 + 1, 2, &z));
    assert_true(checked_mul((size_t)1 << 32, ((size_t)1 << 32) - 1, &z));
    assert_false(checked_mul((size_t)1 << 32, (size_t)1 << 32, &z));
    assert_true(checked_add(SIZE_MAX - 1, 1, &z) && z == SIZE_MAX);
    assert_false(checked_add(SIZE_MAX, 1, &z));
    assert_true(checked_mul_i64(INT64_MAX, 1, &i) && i == INT64_MAX);
    assert_false(checked_mul_i64(INT64_MAX / 2 + 1, 2, &i));
    assert_false(checked_mul_i64(INT64_MIN, -1, &i));
    assert_true(checked_mul_i64(-3, 4, &i) && i == -12);
    assert_true(checked_add_i64(INT64_MAX - 5, 5, &i) && i == INT64_MAX);
    assert_false(checked_add_i64(INT64_MAX, 1, &i));
    assert_false(checked_add_i64(INT64_MIN, -1, &i));
}

static void test_bytes(void **state)
{
    size_t b;
    assert_true(checked_bytes(32, 3072, sizeof(float), &b) && b == 32 * 3072 * 4);
    assert_true(checked_bytes(0, 3072, sizeof(float), &b) && b == 0);
    assert_false(checked_bytes(-1, 3072, sizeof(float), &b));
    assert_false(checked_bytes(32, -1, sizeof(float), &b));
    /* 2^56 x 768 bytes is 3 x 2^64: it wraps to 0 unchecked, the heap overflow of issue 16 */
    assert_false(checked_bytes((int64_t)1 << 56, 192, sizeof(float), &b));
    assert_false(checked_bytes(INT64_MAX, INT64_MAX, 1, &b));
    /* the largest size anything is asked for is PTRDIFF_MAX, with a byte more refused */
    assert_true(checked_bytes(PTRDIFF_MAX, 1, 1, &b) && b == CHECKED_MAX_BYTES);
    assert_false(checked_bytes(((int64_t)1 << 61), 1, sizeof(float), &b));
}

static void test_numel(void **state)
{
    int64_t n;
    assert_true(checked_numel(TEST_SHAPE(3, 32, 32), &n) && n == 3072);
    assert_true(checked_numel(TEST_SHAPE(CHECKED_MAX_DIM), &n) && n == CHECKED_MAX_DIM);
    assert_false(checked_numel(TEST_SHAPE((int64_t)CHECKED_MAX_DIM + 1), &n));
    assert_false(checked_numel(TEST_SHAPE(3, 0, 32), &n));
    assert_false(checked_numel(TEST_SHAPE(-1, -1), &n)); /* a positive product of negative dimensions */
    assert_true(checked_numel(TEST_SHAPE(1 << 20, 1 << 20), &n) && n == CHECKED_MAX_ELEMENTS);
    assert_false(checked_numel(TEST_SHAPE(1 << 20, 1 << 20, 2), &n));
    assert_false(checked_numel(TEST_SHAPE(CHECKED_MAX_DIM, CHECKED_MAX_DIM, CHECKED_MAX_DIM), &n)); /* wraps in int64 */
    rx_shape bad = { .ndim = RX_MAX_DIMS + 1 };
    assert_false(checked_numel(bad, &n));
}

static void test_message(void **state)
{
    char err[ERR_LEN];
    size_origin o = { "cifar10.lua", "data.batch_size", 9223372036854775807LL };
    assert_int_equal(size_error(err, &o, 9.2e18 * 3072 * 4, "the batch's inputs (batch x %d floats)", 3072), -1);
    assert_string_equal(err, "cifar10.lua: data.batch_size = 9223372036854775807: the batch's inputs (batch x 3072 "
                             "floats) needs 1.13e+23 bytes (95.8 ZiB), more than any size can hold (it overflows)");
    o.value = 100000000;
    size_error(err, &o, 1.2e15, "the network's memory");
    assert_non_null(strstr(err, "cifar10.lua: data.batch_size = 100000000: the network's memory needs 1.2e+15 bytes "
                                "(1.07 PiB), more than this machine's memory, "));
    size_error(err, &o, 1000, "x");
    assert_non_null(strstr(err, "x needs 1000 bytes, and that much could not be allocated (out of memory)"));
}

/* Runs runexp with these arguments in a fresh folder; its exit status, stderr in err. The
 * run folder out= names must not be made. */
static int run_runexp(const char *args, char *err, size_t len)
{
    char *dir = test_tmpdir(), cmd[2048], path[600];
    snprintf(path, sizeof path, "%s/stderr", dir);
    bool check = strstr(args, "check") == args;
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/runexp' %s %s >/dev/null 2>stderr", dir, RX_BUILD_DIR, args,
             check ? "" : "out=run");
    int status = system(cmd);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(err, 1, len - 1, f);
    err[n] = '\0';
    fclose(f);
    char run[600];
    snprintf(run, sizeof run, "%s/run", dir);
    struct stat st;
    if (!check) assert_int_not_equal(stat(run, &st), 0); /* no run folder */
    unlink(path);
    rmdir(dir);
    free(dir);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void expect_refused(const char *args, const char *a, const char *b)
{
    char err[ERR_LEN];
    int rc = run_runexp(args, err, sizeof err);
    if (rc != 1 || !strstr(err, a) || (b && !strstr(err, b)))
        fail_msg("runexp %s: exit %d, \"%s\"; wanted exit 1 and \"%s\", \"%s\"", args, rc, err, a, b ? b : "");
    assert_non_null(strchr(err, '\n'));
    assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1); /* one line */
}

#define SYNTHETIC "'" RX_SOURCE_DIR "/configs/synthetic.lua' device=cpu "

static void test_huge_batch_size(void **state)
{
    expect_refused(SYNTHETIC "data.batch_size=9223372036854775807",
                   "'batch_size' must be at most 2147483647 (no batch is larger), got 9223372036854775807", NULL);
    /* within the bound, its buffers are still far more than any machine has: named, not allocated */
    expect_refused(SYNTHETIC "data.batch_size=2147483647", "synthetic.lua: data.batch_size = 2147483647: ",
                   "more than this machine's memory");
    expect_refused(SYNTHETIC "data.batch_size=72057594037927936", "'batch_size' must be at most 2147483647", NULL);
}

static void test_huge_epochs(void **state)
{
    expect_refused(SYNTHETIC "epochs=9223372036854775807", "synthetic.lua: epochs = 9223372036854775807: the record "
                   "of every epoch (epochs x ", "more than any size can hold");
    expect_refused(SYNTHETIC "epochs=100000000000000", "synthetic.lua: epochs = 100000000000000: ",
                   "more than this machine's memory");
}

static void test_check_batch(void **state)
{
    expect_refused("check relu --batch=9223372036854775807", "'--batch=9223372036854775807': expected a batch of 1 to "
                   "2147483647 samples", NULL);
    expect_refused("check relu --batch=99999999999999999999999", "expected a batch of 1 to 2147483647", NULL);
    expect_refused("check relu --batch=4x", "'--batch=4x': expected a batch", NULL);
    expect_refused("check relu --batch=-4", "'--batch=-4': expected a batch", NULL);
    expect_refused("check relu --batch=2147483647", "command line: --batch = 2147483647: relu's checks ",
                   "more than this machine's memory");
    expect_refused("check relu --shape=2147483648,2", "'--shape=2147483648,2': expected --shape=C,H,W", NULL);
    expect_refused("check relu --shape=2147483647,2147483647,2", "--shape = (2147483647, 2147483647, 2): each "
                   "dimension must be 1 to 2147483647", NULL);
    expect_refused("check relu --seed=x", "'--seed=x': expected a seed", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multiply_and_add),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_numel),
        cmocka_unit_test(test_message),
        cmocka_unit_test(test_huge_batch_size),
        cmocka_unit_test(test_huge_epochs),
        cmocka_unit_test(test_check_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
