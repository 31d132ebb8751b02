/* api/cli/cli_keys.c - `sluice keys add`: make an API key, print it once, store its hash.
 *
 * The key itself is never written anywhere: only its SHA-256 goes into the
 * key file (api/http/auth.h), so a leaked key file gives no usable key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/auth.h"
#include "api/cli/cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: sluice keys add --scope infer|admin|infer,admin [--name NAME] [--file FILE]\n"
            "                       [--rps N] [--tokens-per-s N]\n\n"
            "Make a random API key, print it once on stdout and append its SHA-256 hash\n"
            "(never the key) to the key file that `sluice serve --key-file` reads.\n\n"
            "  --scope S          infer (inference routes), admin (model and admin routes), or both\n"
            "  --name NAME        a unique label for the key (default: key-<first hex of its hash>)\n"
            "  --file FILE        the key file (default: $SLUICE_KEY_FILE, else sluice.keys); made 0600\n"
            "  --rps N            this key's requests per second (default: the server's --rate-limit-rps)\n"
            "  --tokens-per-s N   this key's input tokens per second (default: --rate-limit-tokens-per-s)\n");
}

int cli_keys(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "add")) {
        fprintf(stderr, "sluice keys: unknown action '%s' (try sluice keys --help)\n", argv[1]);
        return 2;
    }
    const char *scope = NULL, *name = NULL, *file = getenv("SLUICE_KEY_FILE");
    double rps = 0, tps = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sluice keys add: %s needs a value (try --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        if (!strcmp(a, "--scope")) scope = v;
        else if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--rps") || !strcmp(a, "--tokens-per-s")) {
            double d = strtod(v, &end);
            if (end == v || *end || d < 0) {
                fprintf(stderr, "sluice keys add: %s needs a number >= 0 (got '%s')\n", a, v);
                return 2;
            }
            if (a[2] == 'r') rps = d;
            else tps = d;
        } else {
            fprintf(stderr, "sluice keys add: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    unsigned scopes;
    if (!scope || api_scopes_parse(scope, &scopes)) {
        fprintf(stderr, "sluice keys add: --scope must be infer, admin or infer,admin\n");
        return 2;
    }
    if (!file || !*file) file = "sluice.keys";
    char key[96], auto_name[32];
    if (api_key_generate(key, sizeof key)) {
        fprintf(stderr, "sluice keys add: no randomness for a key\n");
        return 1;
    }
    if (!name) {
        unsigned char h[API_KEY_HASH_BYTES];
        api_sha256(key, strlen(key), h);
        snprintf(auto_name, sizeof auto_name, "key-%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
        name = auto_name;
    }
    char err[512];
    if (api_keys_append(file, name, key, scopes, rps, tps, err, sizeof err)) {
        fprintf(stderr, "sluice keys add: %s\n", err);
        return strstr(err, "already") || strstr(err, "bad key name") ? 2 : 1;
    }
    printf("%s\n", key);
    fprintf(stderr, "sluice keys: key %s (scope %s) added to %s; the key above is shown only now\n", name, scope, file);
    return 0;
}
