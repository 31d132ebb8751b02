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

#endif
