/* engine/mapfile.c - read-only mapping and messages for the model file readers. */
#include "engine/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_SHOWN 96 /* bytes of a tensor name quoted in a message */

static int fail(char *err, size_t errlen, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t errlen, int code, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mapfile_vfail(err, errlen, code, path, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int mapfile_open(const char *path, size_t min_len, const char *what, void **map, size_t *len,
                 char *err, size_t errlen) {
    *map = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), rc = MAPFILE_OK;
    if (fd < 0) return fail(err, errlen, MAPFILE_EIO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = fail(err, errlen, MAPFILE_EIO, path, "cannot stat: %s", strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        rc = fail(err, errlen, MAPFILE_EIO, path, "not a regular file");
    } else if ((unsigned long long)sb.st_size < min_len) {
        rc = fail(err, errlen, MAPFILE_ESHORT, path, "file is %lld bytes, shorter than the %s",
                  (long long)sb.st_size, what);
    } else {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = fail(err, errlen, MAPFILE_EIO, path, "cannot map %lld bytes: %s",
                      (long long)sb.st_size, strerror(errno));
        } else {
            *map = p;
            *len = (size_t)sb.st_size;
        }
    }
    close(fd);
    return rc;
}

void mapfile_close(void *map, size_t len) {
    if (map) munmap(map, len);
}

void mapfile_shown_name(const char *name, size_t len, char *out, size_t outlen) {
    size_t keep = len < outlen - 4 ? len : outlen - 4;
    while (keep < len && keep > 0 && ((unsigned char)name[keep] & 0xC0) == 0x80) keep--;
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    strcpy(out + keep, keep < len ? "..." : "");
}

int mapfile_vfail(char *err, size_t errlen, int code, const char *path, const char *tensor,
                  const char *fmt, va_list ap) {
    if (!err || errlen == 0) return code;
    int off;
    if (tensor) {
        char shown[NAME_SHOWN + 4];
        mapfile_shown_name(tensor, strlen(tensor), shown, sizeof shown);
        off = snprintf(err, errlen, "%s: tensor '%s': ", path, shown);
    } else {
        off = snprintf(err, errlen, "%s: ", path);
    }
    if (off >= 0 && (size_t)off < errlen) vsnprintf(err + off, errlen - (size_t)off, fmt, ap);
    return code;
}
