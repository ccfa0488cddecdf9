/* protobuf.h: the few pieces of the protocol buffers wire format that runexp writes (TensorBoard's
 * event files, ONNX models), appended to a strbuf. No schema compiler and no library: a message is
 * a run of fields, each a tag (field number and wire type) then its value, and a nested message is
 * written into a strbuf of its own and appended as bytes. What an append cannot allocate sets the
 * strbuf's oom flag, checked once when the message is done.
 * https://protobuf.dev/programming-guides/encoding/ */
#ifndef RUNEXP_PROTOBUF_H
#define RUNEXP_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

#include "files.h"

/* The wire types runexp uses. */
typedef enum {
    PB_VARINT = 0,   /* int32, int64, uint64, bool, enum */
    PB_FIXED64 = 1,  /* double, fixed64 */
    PB_BYTES = 2,    /* string, bytes, a nested message, a packed repeated field */
    PB_FIXED32 = 5,  /* float, fixed32 */
} pb_wire_type;

/* A base-128 varint, least significant group first. A negative int64 is written as its two's
 * complement (ten bytes), as protobuf does for int32 and int64. */
void pb_varint(strbuf *b, uint64_t v);
/* A field's key: (field << 3) | wire type. */
void pb_tag(strbuf *b, uint32_t field, pb_wire_type type);
/* Little-endian fixed-size values, without a tag. */
void pb_fixed32(strbuf *b, uint32_t v);
void pb_fixed64(strbuf *b, uint64_t v);

/* Whole fields: tag, then value. */
void pb_field_varint(strbuf *b, uint32_t field, uint64_t v);
void pb_field_float(strbuf *b, uint32_t field, float v);
void pb_field_double(strbuf *b, uint32_t field, double v);
void pb_field_bytes(strbuf *b, uint32_t field, const void *data, size_t len);
void pb_field_string(strbuf *b, uint32_t field, const char *s);
/* A nested message, written before into its own strbuf (its oom carries over to b). */
void pb_field_message(strbuf *b, uint32_t field, const strbuf *msg);

#endif
