/* tests/support_leaks.h - assert_no_leaks() for Criterion tests.
 *
 * Criterion counts a test that passed as passed even when LeakSanitizer then
 * reports at exit, so under ASan each test asks for a leak check itself; in
 * other builds the check is a no-op. Include after <criterion/criterion.h>.
 */
#ifndef SLUICE_TESTS_SUPPORT_LEAKS_H
#define SLUICE_TESTS_SUPPORT_LEAKS_H

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define assert_no_leaks()                                                                          \
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)")
#else
#define assert_no_leaks() ((void)0)
#endif

#endif
