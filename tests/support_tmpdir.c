/* tests/support_tmpdir.c - the per-test temporary folder (see support_tmpdir.h). */
#include "tests/support_tmpdir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char g_dir[256];

void tmpdir_init(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/sluice-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", g_dir, strerror(errno));
        abort();
    }
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

void tmpdir_fini(void) {
    if (g_dir[0]) nftw(g_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    g_dir[0] = '\0';
}

const char *tmpdir_get(void) { return g_dir; }

const char *tmpdir_file(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

void tmpdir_bad_file_paths(const char *ext, void (*expect)(const char *path, const char *words)) {
    char absent[320], dir[320], fifo[320];
    snprintf(absent, sizeof absent, "%s/absent.%s", g_dir, ext);
    snprintf(dir, sizeof dir, "%s/dir.%s", g_dir, ext);
    snprintf(fifo, sizeof fifo, "%s/fifo.%s", g_dir, ext);
    if (mkdir(dir, 0700) || mkfifo(fifo, 0600)) {
        fprintf(stderr, "tmpdir_bad_file_paths: %s\n", strerror(errno));
        abort();
    }
    expect(absent, "cannot open");
    expect(dir, "not a regular file");
    expect(fifo, "not a regular file");
}
