/* protobuf.c: the protocol buffers wire format, written (see protobuf.h). */
#include "protobuf.h"

#include <string.h>

void pb_varint(strbuf *b, uint64_t v)
{
    unsigned char out[10];
    size_t n = 0;
    do {
        out[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) out[n] |= 0x80;
        n++;
    } while (v);
    sb_append(b, out, n);
}

void pb_tag(strbuf *b, uint32_t field, pb_wire_type type)
{
    pb_varint(b, ((uint64_t)field << 3) | (uint64_t)type);
}

void pb_fixed32(strbuf *b, uint32_t v)
{
    unsigned char out[4];
    for (int i = 0; i < 4; i++) out[i] = (unsigned char)(v >> (8 * i));
    sb_append(b, out, sizeof out);
}

void pb_fixed64(strbuf *b, uint64_t v)
{
    unsigned char out[8];
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (8 * i));
    sb_append(b, out, sizeof out);
}

void pb_field_varint(strbuf *b, uint32_t field, uint64_t v)
{
    pb_tag(b, field, PB_VARINT);
    pb_varint(b, v);
}

void pb_field_float(strbuf *b, uint32_t field, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits); /* IEEE 754 single, as the wire wants it */
    pb_tag(b, field, PB_FIXED32);
    pb_fixed32(b, bits);
}

void pb_field_double(strbuf *b, uint32_t field, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    pb_tag(b, field, PB_FIXED64);
    pb_fixed64(b, bits);
}

void pb_field_bytes(strbuf *b, uint32_t field, const void *data, size_t len)
{
    pb_tag(b, field, PB_BYTES);
    pb_varint(b, len);
    if (len) sb_append(b, data, len);
}

void pb_field_string(strbuf *b, uint32_t field, const char *s)
{
    pb_field_bytes(b, field, s, strlen(s));
}

void pb_field_message(strbuf *b, uint32_t field, const strbuf *msg)
{
    if (msg->oom) b->oom = true;
    pb_field_bytes(b, field, msg->s, msg->len);
}
