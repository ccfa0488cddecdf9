/* picture.h: image files in, 8-bit RGB out. PNG (libpng) and JPEG (libjpeg-turbo's libjpeg API)
 * are told apart by their first bytes, not by the file's name; grey, palette and alpha are
 * converted to RGB (alpha dropped, as PIL's convert("RGB") does, which torchvision's ImageFolder
 * loader calls), 16-bit samples reduced to their high byte. Then fitted to a size the network
 * takes: scaled whole, or scaled and centre-cropped.
 *
 * One copy for the data plugins (linked from libcommon.a like the rest of plugins/common) and for
 * the host, which links the same library for `runexp predict`. It reads no files: each side reads
 * the bytes its own way (plugins through regular.c, the host through core/files.c, whose
 * open_regular differ) and hands them over with the file's name. Errors go through rx_fail as
 * one line that starts with that name and says what was wrong: not an image, truncated, too
 * large, or the library's own reason. */
#ifndef RX_COMMON_PICTURE_H
#define RX_COMMON_PICTURE_H

#include <stddef.h>
#include <stdint.h>

#include "runexp.h"

/* The largest picture decoded: 8192 x 8192. A bigger one is refused before memory is taken
 * (a 100-byte PNG can claim 2^31 x 2^31 pixels). */
#define PICTURE_MAX_PIXELS (8192ll * 8192ll)
/* The largest file a caller should read: compressed pictures are far smaller than their pixels. */
#define PICTURE_MAX_BYTES (256ll << 20)

typedef struct picture {
    int w, h;
    uint8_t *rgb; /* (h, w, 3), malloc'd; picture_free releases it */
} picture;

/* How a picture becomes h x w:
 * - PICTURE_RESIZE: the whole picture scaled to h x w (its aspect is not kept);
 * - PICTURE_CROP: scaled so that it covers h x w with its aspect kept, then the centre h x w cut
 *   (torchvision's Resize(size) then CenterCrop(size)).
 * Scaling is bilinear (a triangle filter), widened by the scale when shrinking so that every
 * source pixel counts: Pillow's BILINEAR and torchvision's Resize(antialias=True). */
typedef enum { PICTURE_RESIZE = 0, PICTURE_CROP = 1 } picture_fit;

/* The names of picture_fit's values, "resize" and "crop", for parameters and options; NULL ends
 * the list (as luaL_checkoption takes it). */
extern const char *const picture_fit_names[3];

/* The PNG or JPEG in bytes[0 .. len) (the file PATH) into *p. 0, or -1 after rx_fail("PATH: ..."),
 * p left empty. */
int picture_decode(rx_ctx *ctx, const char *path, const uint8_t *bytes, size_t len, picture *p);
void picture_free(picture *p);

/* p fitted to h x w into out (3, h, w), channel planes as the network takes them. h, w in
 * [1, 8192]. 0, or -1 after rx_fail (out of memory). */
int picture_fit_to(rx_ctx *ctx, const picture *p, picture_fit fit, int h, int w, uint8_t *out);

#endif
