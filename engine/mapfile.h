/* engine/mapfile.h - what the model file readers (safetensors, GGUF) share:
 * a whole file mapped read-only, and their error messages.
 *
 * mapfile_open refuses what cannot be a model file before mapping it (a
 * missing path, a directory, a FIFO - opened without blocking -, a file under
 * min_len bytes). Messages read "path: what" or "path: tensor 'name': what";
 * names come from the file, so mapfile_shown_name makes them safe to print.
 *
 * Ownership: the caller owns the mapping and unmaps it with mapfile_close.
 * Every call is thread-safe.
 */
#ifndef SLUICE_MAPFILE_H
#define SLUICE_MAPFILE_H

#include <stdarg.h>
#include <stddef.h>

enum { MAPFILE_OK = 0, MAPFILE_EIO = -1, MAPFILE_ESHORT = -2 };

/* Maps path; on error fills err ("path: ...", saying the file is shorter than
 * min_len bytes, the size of `what`) and returns MAPFILE_EIO or MAPFILE_ESHORT. */
int mapfile_open(const char *path, size_t min_len, const char *what, void **map, size_t *len,
                 char *err, size_t errlen);
void mapfile_close(void *map, size_t len); /* NULL map is a no-op */

/* A name as it may appear in a message: control bytes become '?', names
 * longer than outlen - 4 are cut at a UTF-8 boundary and end in "...". */
void mapfile_shown_name(const char *name, size_t len, char *out, size_t outlen);

/* Fills err with "path: " (plus "tensor 'name': " when tensor is not NULL,
 * shown as above) and the formatted message; returns code. */
int mapfile_vfail(char *err, size_t errlen, int code, const char *path, const char *tensor,
                  const char *fmt, va_list ap);

#endif
