/* tools/canvas.c: the display list behind `dmakit map`, written as SVG by hand and, when
 * cairo was found at build time (DK_HAVE_CAIRO), rendered to PNG. */
#include "canvas.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#ifdef DK_HAVE_CAIRO
#include <cairo.h>
#endif

void canvas_init(canvas *c, double width, double height)
{
  memset(c, 0, sizeof *c);
  c->width = width;
  c->height = height;
}

void canvas_free(canvas *c) { free(c->v); memset(c, 0, sizeof *c); }

static shape *push(canvas *c, shape_kind k)
{
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    shape *v = realloc(c->v, cap * sizeof *v);
    if (!v) { fprintf(stderr, "dmakit: out of memory\n"); exit(1); }
    c->v = v;
    c->cap = cap;
  }
  shape *s = &c->v[c->n++];
  memset(s, 0, sizeof *s);
  s->kind = k;
  s->fill = s->stroke = NO_COLOR;
  s->stroke_width = 1;
  return s;
}

shape *canvas_rect(canvas *c, double x, double y, double w, double h, uint32_t fill, uint32_t stroke)
{
  shape *s = push(c, SHAPE_RECT);
  s->x = x; s->y = y; s->w = w; s->h = h;
  s->fill = fill;
  s->stroke = stroke;
  return s;
}

shape *canvas_line(canvas *c, double x1, double y1, double x2, double y2, uint32_t color, bool dashed)
{
  shape *s = push(c, SHAPE_LINE);
  s->x = x1; s->y = y1; s->w = x2; s->h = y2;
  s->stroke = color;
  s->dashed = dashed;
  return s;
}

shape *canvas_text(canvas *c, double x, double y, double size, uint32_t color, text_anchor a, const char *fmt, ...)
{
  shape *s = push(c, SHAPE_TEXT);
  s->x = x; s->y = y;
  s->font_size = size;
  s->fill = color;
  s->anchor = a;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->text, sizeof s->text, fmt, ap);
  va_end(ap);
  return s;
}

/* ---- SVG ---------------------------------------------------------------------------------- */
static void esc(FILE *f, const char *t)
{
  for (; *t; t++) {
    switch (*t) {
    case '&': fputs("&amp;", f); break;
    case '<': fputs("&lt;", f); break;
    case '>': fputs("&gt;", f); break;
    case '"': fputs("&quot;", f); break;
    default: fputc(*t, f);
    }
  }
}

static void color(FILE *f, const char *attr, uint32_t c)
{
  if (c == NO_COLOR) fprintf(f, " %s=\"none\"", attr);
  else fprintf(f, " %s=\"#%06x\"", attr, c & 0xFFFFFFu);
}

int canvas_write_svg(const canvas *c, FILE *f)
{
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
             "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
             "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
          c->width, c->height, c->width, c->height);
  for (size_t i = 0; i < c->n; i++) {
    const shape *s = &c->v[i];
    switch (s->kind) {
    case SHAPE_RECT:
      fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\"", s->x, s->y, s->w, s->h);
      color(f, "fill", s->fill);
      color(f, "stroke", s->stroke);
      if (s->stroke != NO_COLOR) fprintf(f, " stroke-width=\"%.1f\"", s->stroke_width);
      if (s->id[0]) { fputs(" id=\"", f); esc(f, s->id); fputc('"', f); }
      if (s->cls[0]) { fputs(" class=\"", f); esc(f, s->cls); fputc('"', f); }
      if (s->text[0]) { fputs("><title>", f); esc(f, s->text); fputs("</title></rect>\n", f); }
      else fputs("/>\n", f);
      break;
    case SHAPE_LINE:
      fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"", s->x, s->y, s->w, s->h);
      color(f, "stroke", s->stroke);
      fprintf(f, " stroke-width=\"%.1f\"%s", s->stroke_width, s->dashed ? " stroke-dasharray=\"6 4\"" : "");
      if (s->cls[0]) { fputs(" class=\"", f); esc(f, s->cls); fputc('"', f); }
      fputs("/>\n", f);
      break;
    case SHAPE_TEXT:
      fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.1f\"%s%s", s->x, s->y, s->font_size,
              s->anchor == ANCHOR_MIDDLE ? " text-anchor=\"middle\"" : s->anchor == ANCHOR_END ? " text-anchor=\"end\"" : "",
              s->bold ? " font-weight=\"bold\"" : "");
      color(f, "fill", s->fill);
      if (s->id[0]) { fputs(" id=\"", f); esc(f, s->id); fputc('"', f); }
      fputc('>', f);
      esc(f, s->text);
      fputs("</text>\n", f);
      break;
    }
  }
  fputs("</svg>\n", f);
  return ferror(f) ? -1 : 0;
}

/* ---- PNG ---------------------------------------------------------------------------------- */
#ifdef DK_HAVE_CAIRO
bool canvas_png_available(void) { return true; }

static void set_rgb(cairo_t *cr, uint32_t c)
{
  cairo_set_source_rgb(cr, ((c >> 16) & 0xFF) / 255.0, ((c >> 8) & 0xFF) / 255.0, (c & 0xFF) / 255.0);
}

int canvas_write_png(const canvas *c, const char *path, const char **why)
{
  cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)c->width, (int)c->height);
  cairo_t *cr = cairo_create(sf);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  for (size_t i = 0; i < c->n; i++) {
    const shape *s = &c->v[i];
    switch (s->kind) {
    case SHAPE_RECT:
      cairo_rectangle(cr, s->x, s->y, s->w, s->h);
      if (s->fill != NO_COLOR) { set_rgb(cr, s->fill); cairo_fill_preserve(cr); }
      if (s->stroke != NO_COLOR) { set_rgb(cr, s->stroke); cairo_set_line_width(cr, s->stroke_width); cairo_stroke(cr); }
      cairo_new_path(cr);
      break;
    case SHAPE_LINE: {
      static const double dash[2] = { 6, 4 };
      cairo_set_dash(cr, dash, s->dashed ? 2 : 0, 0);
      cairo_move_to(cr, s->x, s->y);
      cairo_line_to(cr, s->w, s->h);
      set_rgb(cr, s->stroke);
      cairo_set_line_width(cr, s->stroke_width);
      cairo_stroke(cr);
      cairo_set_dash(cr, NULL, 0, 0);
      break;
    }
    case SHAPE_TEXT: {
      cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                             s->bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
      cairo_set_font_size(cr, s->font_size);
      cairo_text_extents_t ext;
      cairo_text_extents(cr, s->text, &ext);
      double x = s->x - (s->anchor == ANCHOR_MIDDLE ? ext.x_advance / 2 : s->anchor == ANCHOR_END ? ext.x_advance : 0);
      cairo_move_to(cr, x, s->y);
      set_rgb(cr, s->fill == NO_COLOR ? 0 : s->fill);
      cairo_show_text(cr, s->text);
      break;
    }
    }
  }
  cairo_destroy(cr);
  cairo_status_t st = cairo_surface_write_to_png(sf, path);
  cairo_surface_destroy(sf);
  if (st != CAIRO_STATUS_SUCCESS) { *why = cairo_status_to_string(st); return -1; }
  return 0;
}
#else
bool canvas_png_available(void) { return false; }

int canvas_write_png(const canvas *c, const char *path, const char **why)
{
  (void)c;
  (void)path;
  *why = "this dmakit was built without cairo: install libcairo2-dev and rebuild (the SVG is always written)";
  return -1;
}
#endif
