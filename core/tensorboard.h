/* tensorboard.h: TensorBoard's event files, written. An event file is a run of TFRecord records
 * (the length as a little-endian uint64, a masked CRC-32C of those 8 bytes, the data, a masked
 * CRC-32C of the data), each an Event message (tensorflow/core/util/event.proto): its wall time,
 * step and either the file version "brain.Event:2" (the first record) or a Summary of scalars.
 * A process writes a file of its own (events.out.tfevents.TIME.HOST.PID), appended to and
 * flushed to disk at each call of tb_append, so a killed run keeps what it wrote before; a
 * resumed run writes a new file beside the old ones, named to sort after them (TIME is past
 * every earlier file's), and TensorBoard reads the folder's files in that order as one stream. */
#ifndef RUNEXP_TENSORBOARD_H
#define RUNEXP_TENSORBOARD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "error.h"
#include "files.h"

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses: crc32c("123456789")
 * is 0xE3069283 (RFC 3720, B.4). */
uint32_t crc32c(const void *data, size_t len);
/* TFRecord's masking of a CRC, so that a CRC of data holding CRCs is not degenerate. */
uint32_t crc32c_mask(uint32_t crc);

/* Appends one Event holding one scalar (tag, value at step), framed as a TFRecord record. */
void tb_scalar(strbuf *b, double wall_time, int64_t step, const char *tag, double value);
/* Appends records (tb_scalar's) to this process's event file in dir (made when missing),
 * started (the process's run start) naming it; a new file first gets the version event. The
 * bytes are written at once and flushed to disk. */
int tb_append(const char *dir, time_t started, const strbuf *records, char *err);

#endif
