/* font.h: a small bitmap font for labels drawn into pictures (the run folder's image grids).
 * Every printable ASCII character (32..126) is a 5x9 glyph: 7 rows above the baseline (capitals
 * and digits), 2 below (descenders of g, j, p, q, y), in a cell of FONT_ADVANCE x FONT_LINE
 * pixels at scale 1. Each font pixel becomes a scale x scale square. */
#ifndef RUNEXP_FONT_H
#define RUNEXP_FONT_H

#include <stdint.h>

#define FONT_GLYPH_W 5
#define FONT_GLYPH_H 9
#define FONT_ADVANCE 6   /* pixels from one character to the next at scale 1 */
#define FONT_LINE 10     /* pixels from one line to the next at scale 1 */

typedef struct rgb8 {
    uint8_t r, g, b;
} rgb8;

/* Draws text into an RGB image (width x height pixels, 3 bytes each, rows top to bottom) with its
 * top-left corner at (x, y); what falls outside the image is clipped. Characters outside 32..126
 * are drawn as '?'. Returns the x just past the last character. */
int font_draw_text(uint8_t *rgb, int width, int height, int x, int y, const char *text, rgb8 color,
                   int scale);
/* The width in pixels that font_draw_text covers for text, without the trailing gap; 0 for "". */
int font_text_width(const char *text, int scale);

#endif
