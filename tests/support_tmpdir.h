/* tests/support_tmpdir.h - one fresh temporary folder per test.
 *
 * Criterion runs each test in its own process, so a suite declared with
 *   TestSuite(name, .init = tmpdir_init, .fini = tmpdir_fini);
 * gets a folder of its own under $TMPDIR (or /tmp) for every test, removed
 * with all it holds when the test ends. tmpdir_init aborts the test if the
 * folder cannot be made.
 */
#ifndef SLUICE_TESTS_SUPPORT_TMPDIR_H
#define SLUICE_TESTS_SUPPORT_TMPDIR_H

void tmpdir_init(void);
void tmpdir_fini(void);
const char *tmpdir_get(void);               /* the folder */
const char *tmpdir_file(const char *name);  /* folder/name, in a buffer the next call reuses */

/* The paths every model-file loader refuses the same way, whatever its
 * format, made in the folder with extension ext: a file that does not exist
 * (the refusal says "cannot open"), a folder and a FIFO ("not a regular
 * file"; opening the FIFO must not hang). expect(path, words) asserts the
 * loader's refusal of path and that its message holds words. */
void tmpdir_bad_file_paths(const char *ext, void (*expect)(const char *path, const char *words));

#endif
