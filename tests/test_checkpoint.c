/* test_checkpoint.c: safetensors written and read back, the tutorial's names and shapes as
 * PyTorch gives them, and broken files refused without touching the weights. */
#include "helpers.h"

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "files.h"

static char *tmp_file(const char *dir, const char *name)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* A hand-made safetensors file: header text, then `data_len` bytes of data. */
static void write_safetensors(const char *path, const char *header, size_t data_len)
{
    size_t hlen = strlen(header), total = 8 + hlen + data_len;
    unsigned char *buf = calloc(1, total);
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)((uint64_t)hlen >> (8 * b));
    memcpy(buf + 8, header, hlen);
    write_bytes(path, buf, total);
    free(buf);
}

static void test_round_trip_and_layout(void **state)
{
    char *dir = test_tmpdir();
    char *path = tmp_file(dir, "a.safetensors");
    float w[6] = { 1, -2, 3.5f, 4, 5, 6 }, b[2] = { 0.25f, -0.5f };
    ckpt_tensor t[2] = { { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w },
                         { .name = "0.bias", .shape = TEST_SHAPE(2), .data = b } };
    ckpt_meta meta[] = { { "epoch", "3" } };
    char err[ERR_LEN];
    assert_int_equal(checkpoint_write(path, t, 2, meta, 1, err), 0);

    char *file;
    size_t len;
    assert_int_equal(read_file(path, &file, &len, err), 0);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)file[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);                 /* data starts aligned */
    assert_int_equal(len, 8 + hlen + sizeof w + sizeof b);
    assert_int_equal(file[8], '{');
    assert_non_null(strstr(file + 8, "\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"));
    assert_non_null(strstr(file + 8, "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}"));
    assert_non_null(strstr(file + 8, "\"__metadata__\":{\"epoch\":\"3\"}"));
    assert_memory_equal(file + 8 + hlen, w, sizeof w);
    free(file);

    float w2[6] = { 0 }, b2[2] = { 0 };
    ckpt_meta_buf got_meta;
    ckpt_tensor back[2] = { { .name = "0.bias", .shape = TEST_SHAPE(2), .data = b2 },
                            { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w2 } };
    assert_int_equal(checkpoint_read(path, back, 2, &got_meta, err), 0);
    assert_memory_equal(w2, w, sizeof w);
    assert_memory_equal(b2, b, sizeof b);
    assert_string_equal(ckpt_meta_get(&got_meta, "epoch"), "3");
    assert_null(ckpt_meta_get(&got_meta, "step"));
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* Each broken file must be refused with `why`, and leave the destination as it was. */
static void expect_refused(const char *path, const char *why)
{
    float w[6] = { 9, 9, 9, 9, 9, 9 };
    ckpt_tensor t[1] = { { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w } };
    char err[ERR_LEN] = "";
    assert_int_equal(checkpoint_read(path, t, 1, NULL, err), -1);
    if (!strstr(err, why) || !strstr(err, path)) fail_msg("got \"%s\", wanted \"%s\"", err, why);
    for (int i = 0; i < 6; i++) assert_true(w[i] == 9);
}

static void test_broken_files(void **state)
{
    char *dir = test_tmpdir();
    char *path = tmp_file(dir, "bad.safetensors");
    const char *good = "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    write_safetensors(path, good, 24);
    float w[6];
    ckpt_tensor ok[1] = { { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w } };
    char err[ERR_LEN];
    assert_int_equal(checkpoint_read(path, ok, 1, NULL, err), 0); /* the hand-made file itself is valid */

    write_safetensors(path, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,36]}}", 36);
    expect_refused(path, "tensor '0.weight' has shape (3, 3), the network expects (2, 3)");
    write_safetensors(path, "{\"0.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12);
    expect_refused(path, "tensor '0.weight' has dtype F16, expected F32");
    write_safetensors(path, "{\"1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    expect_refused(path, "holds tensor '1.weight', which the network does not have");
    write_safetensors(path, "{\"__metadata__\":{\"a\":\"b\"}}", 0);
    expect_refused(path, "tensor '0.weight' is missing");
    write_safetensors(path, good, 12); /* cut in half */
    expect_refused(path, "data_offsets [0, 24]");
    write_safetensors(path, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}", 24);
    expect_refused(path, "not a valid safetensors file");
    write_safetensors(path, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"offsets\":[0,24]}}", 24);
    expect_refused(path, "unknown key in a tensor entry");
    write_safetensors(path, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                            "\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
    expect_refused(path, "appears twice");
    unsigned char huge[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}' };
    write_bytes(path, huge, sizeof huge);
    expect_refused(path, "not a safetensors file: header of");
    write_bytes(path, "abc", 3);
    expect_refused(path, "too short for a header");
    unlink(path);
    expect_refused(path, "cannot open");
    rmdir(dir);
    free(dir);
}

/* Two tensors whose data_offsets do not tile the data section exactly, as the safetensors
 * specification asks: each refused, the tensor named. */
static void expect_layout_refused(const char *path, const char *header, size_t data_len, const char *why)
{
    write_safetensors(path, header, data_len);
    float w[6] = { 9, 9, 9, 9, 9, 9 }, b[2] = { 9, 9 };
    ckpt_tensor t[2] = { { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w },
                         { .name = "0.bias", .shape = TEST_SHAPE(2), .data = b } };
    char err[ERR_LEN] = "";
    assert_int_equal(checkpoint_read(path, t, 2, NULL, err), -1);
    if (!strstr(err, why) || !strstr(err, path)) fail_msg("got \"%s\", wanted \"%s\"", err, why);
    for (int i = 0; i < 6; i++) assert_true(w[i] == 9);
}

static void test_offsets_tile_the_data(void **state)
{
    char *dir = test_tmpdir();
    char *path = tmp_file(dir, "layout.safetensors");
    /* In either order in the header, and laid out either way round: accepted. */
    const char *bias_first = "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                             "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_safetensors(path, bias_first, 32);
    float w[6], b[2];
    ckpt_tensor ok[2] = { { .name = "0.weight", .shape = TEST_SHAPE(2, 3), .data = w },
                          { .name = "0.bias", .shape = TEST_SHAPE(2), .data = b } };
    char err[ERR_LEN];
    if (checkpoint_read(path, ok, 2, NULL, err) != 0) fail_msg("%s", err);

    expect_layout_refused(path,
                          "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                          "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24,
                          "tensor '0.bias' (data_offsets [16, 24]) overlaps tensor '0.weight' (data_offsets [0, 24])");
    expect_layout_refused(path,
                          "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                          "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]}}", 36,
                          "the data section has bytes [24, 28) that no tensor holds, before tensor '0.bias'");
    expect_layout_refused(path,
                          "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]},"
                          "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]}}", 36,
                          "bytes [0, 4) that no tensor holds, before tensor '0.weight'");
    expect_layout_refused(path,
                          "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                          "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}", 40,
                          "the data section has 8 bytes after the last tensor");
    unlink(path);
    rmdir(dir);
    free(dir);
}

/* A FIFO given as a checkpoint is refused at once: opening it would wait for a writer. */
static void test_fifo_is_refused(void **state)
{
    char *dir = test_tmpdir();
    char *path = tmp_file(dir, "fifo.safetensors");
    assert_int_equal(mkfifo(path, 0644), 0);
    alarm(20); /* a blocking open would hang the suite: end it instead */
    time_t start = time(NULL);
    expect_refused(path, "fifo.safetensors: is a FIFO, expected a regular file");
    assert_true(time(NULL) - start <= 1);
    alarm(0);
    unlink(path);
    expect_refused(dir, "is a folder, expected a regular file");
    rmdir(dir);
    free(dir);
}

/* The tutorial's network from configs/cifar10.lua, saved with PyTorch's names, and loaded back
 * into a network initialized from another seed. */
static void test_tutorial_names(void **state)
{
    plugin_path pp;
    test_plugin_path(&pp);
    config c;
    char err[ERR_LEN];
    if (config_load(&c, &pp, RX_SOURCE_DIR "/configs/cifar10.lua", 0, NULL, err) != 0) fail_msg("%s", err);
    rx_ctx ctx = { .device = RX_CPU, .threads = 1 };
    net a, b;
    if (net_build(&a, &ctx, &c, TEST_SHAPE(3, 32, 32), 2, err) != 0) fail_msg("%s", err);
    if (net_build(&b, &ctx, &c, TEST_SHAPE(3, 32, 32), 2, err) != 0) fail_msg("%s", err);
    assert_int_equal(net_init_params(&a, 1, err), 0);
    assert_int_equal(net_init_params(&b, 2, err), 0);
    assert_memory_not_equal(a.params, b.params, a.nparams * sizeof(float));

    char *dir = test_tmpdir();
    char *path = tmp_file(dir, "best.safetensors");
    assert_int_equal(checkpoint_save_net(&a, path, NULL, 0, NULL, 0, err), 0);

    /* The names and shapes PyTorch's nn.Sequential gives the same model. */
    static const struct { const char *name; rx_shape shape; } want[] = {
        { "0.weight", { 4, { 16, 3, 3, 3 } } }, { "0.bias", { 1, { 16 } } },
        { "3.weight", { 4, { 32, 16, 3, 3 } } }, { "3.bias", { 1, { 32 } } },
        { "6.weight", { 4, { 64, 32, 3, 3 } } }, { "6.bias", { 1, { 64 } } },
        { "11.weight", { 2, { 120, 1024 } } }, { "11.bias", { 1, { 120 } } },
        { "14.weight", { 2, { 60, 120 } } }, { "14.bias", { 1, { 60 } } },
        { "17.weight", { 2, { 10, 60 } } }, { "17.bias", { 1, { 10 } } },
    };
    enum { N = sizeof want / sizeof *want };
    ckpt_tensor t[N];
    size_t total = 0;
    for (int i = 0; i < N; i++) total += (size_t)rx_numel(want[i].shape);
    assert_int_equal(total, a.nparams);
    float *host = malloc(total * sizeof(float));
    for (int i = 0, at = 0; i < N; i++) {
        snprintf(t[i].name, sizeof t[i].name, "%s", want[i].name);
        t[i].shape = want[i].shape;
        t[i].data = host + at;
        at += (int)rx_numel(want[i].shape);
    }
    if (checkpoint_read(path, t, N, NULL, err) != 0) fail_msg("%s", err);
    assert_memory_equal(host, a.params, total * sizeof(float)); /* same order as the flat buffer */

    assert_int_equal(checkpoint_load_net(&b, path, NULL, 0, NULL, err), 0);
    assert_memory_equal(a.params, b.params, a.nparams * sizeof(float));

    free(host);
    net_free(&a);
    net_free(&b);
    config_free(&c);
    unlink(path);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_layout),
        cmocka_unit_test(test_broken_files),
        cmocka_unit_test(test_offsets_tile_the_data),
        cmocka_unit_test(test_fifo_is_refused),
        cmocka_unit_test(test_tutorial_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
