/* test_protobuf.c: the protocol buffers wire format (core/protobuf.h) against encodings worked out
 * by hand from protobuf.dev's encoding guide: varints at their byte boundaries, negative int64 in
 * ten bytes, tags, little-endian fixed-size values, strings and nested messages. */
#include "helpers.h"

#include "protobuf.h"

/* b holds exactly the n bytes want; b is freed. */
static void expect_bytes(strbuf *b, const unsigned char *want, size_t n)
{
    assert_false(b->oom);
    assert_int_equal(b->len, n);
    assert_memory_equal(b->s, want, n);
    sb_free(b);
}

static void test_varints(void **state)
{
    strbuf b = { 0 };
    pb_varint(&b, 0);
    pb_varint(&b, 1);
    pb_varint(&b, 127);
    pb_varint(&b, 128);
    pb_varint(&b, 300);
    expect_bytes(&b, (const unsigned char[]){ 0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02 }, 7);
    pb_varint(&b, UINT64_MAX);
    expect_bytes(&b, (const unsigned char[]){ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 10);
    pb_varint(&b, (uint64_t)(int64_t)-2); /* an int64 field's -2: two's complement, ten bytes */
    expect_bytes(&b, (const unsigned char[]){ 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 10);
}

static void test_tags_and_fixed(void **state)
{
    strbuf b = { 0 };
    pb_field_varint(&b, 1, 150); /* the guide's first example: 08 96 01 */
    pb_tag(&b, 16, PB_BYTES);    /* field 16 needs a two-byte key */
    expect_bytes(&b, (const unsigned char[]){ 0x08, 0x96, 0x01, 0x82, 0x01 }, 5);
    pb_field_float(&b, 2, 1.0f);
    pb_field_double(&b, 1, 1.0);
    expect_bytes(&b, (const unsigned char[]){ 0x15, 0x00, 0x00, 0x80, 0x3f,
                                              0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f }, 14);
    pb_fixed32(&b, 0x01020304);
    pb_fixed64(&b, 0x0102030405060708ull);
    expect_bytes(&b, (const unsigned char[]){ 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1 }, 12);
}

static void test_strings_and_messages(void **state)
{
    strbuf b = { 0 }, inner = { 0 };
    pb_field_string(&b, 2, "testing"); /* the guide's string example */
    expect_bytes(&b, (const unsigned char[]){ 0x12, 0x07, 't', 'e', 's', 't', 'i', 'n', 'g' }, 9);
    pb_field_bytes(&b, 4, "", 0);
    expect_bytes(&b, (const unsigned char[]){ 0x22, 0x00 }, 2);
    pb_field_varint(&inner, 1, 150);
    pb_field_message(&b, 3, &inner); /* the guide's embedded message: 1a 03 08 96 01 */
    sb_free(&inner);
    expect_bytes(&b, (const unsigned char[]){ 0x1a, 0x03, 0x08, 0x96, 0x01 }, 5);
    pb_field_message(&b, 3, &inner); /* an empty message is a zero length */
    expect_bytes(&b, (const unsigned char[]){ 0x1a, 0x00 }, 2);
    inner.oom = true; /* a nested message that ran out of memory spoils the outer one */
    pb_field_message(&b, 3, &inner);
    assert_true(b.oom);
    sb_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varints),
        cmocka_unit_test(test_tags_and_fixed),
        cmocka_unit_test(test_strings_and_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
