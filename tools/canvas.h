/* tools/canvas.h: a tiny display list (rectangles, lines, text) that `dmakit map` draws
 * into and then writes as SVG (always) or renders to PNG through cairo (when built in). */
#ifndef DMAKIT_TOOLS_CANVAS_H
#define DMAKIT_TOOLS_CANVAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { SHAPE_RECT, SHAPE_LINE, SHAPE_TEXT } shape_kind;
typedef enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END } text_anchor;

#define NO_COLOR 0xFF000000u          /* 0xRRGGBB, or this for none */

typedef struct shape {
  shape_kind kind;
  double x, y, w, h;                  /* lines: (x, y) to (w, h) */
  uint32_t fill, stroke;
  double stroke_width;
  bool dashed, bold;
  double font_size;
  text_anchor anchor;
  char id[24];                        /* SVG id, e.g. "buffer-3" */
  char cls[16];                       /* SVG class */
  char text[160];                     /* text, or an SVG <title> for rectangles */
} shape;

typedef struct canvas { shape *v; size_t n, cap; double width, height; } canvas;

void canvas_init(canvas *c, double width, double height);
void canvas_free(canvas *c);
shape *canvas_rect(canvas *c, double x, double y, double w, double h, uint32_t fill, uint32_t stroke);
shape *canvas_line(canvas *c, double x1, double y1, double x2, double y2, uint32_t color, bool dashed);
__attribute__((format(printf, 7, 8)))
shape *canvas_text(canvas *c, double x, double y, double size, uint32_t color, text_anchor a, const char *fmt, ...);

int canvas_write_svg(const canvas *c, FILE *f);
/* 0 on success; -1 with *why set (cairo missing or a cairo error). */
int canvas_write_png(const canvas *c, const char *path, const char **why);
bool canvas_png_available(void);

#endif
