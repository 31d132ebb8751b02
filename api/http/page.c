/* api/http/page.c - the operator's page: GET / (HTML), /ui.js and /ui.css.
 *
 * Three static files of api/http/ui/, embedded at build time (.incbin, as the
 * queue's Lua scripts are; the Makefile makes page.o depend on them). They
 * hold no server data and need no key: the page asks for one and sends it
 * as a Bearer header on every data call it makes (to the server's own JSON
 * routes). The script and the style sheet are files of their own so that the
 * Content-Security-Policy allows nothing inline and nothing from another
 * origin: every answer here carries the same strict policy.
 */
#include <stdlib.h>
#include <string.h>

#include "api/http/routes.h"
#include "kernels/util.h"

#define PAGE_EMBED(sym, file) UTIL_EMBED(sym, "api/http/ui/" file)

PAGE_EMBED(api_page_html, "index.html");
PAGE_EMBED(api_page_js, "ui.js");
PAGE_EMBED(api_page_css, "ui.css");

const char api_page_csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static int serve(api_req_t *r, const char *text, const char *type) {
    static const char *const headers[] = {
        "Content-Security-Policy", api_page_csp,  "X-Content-Type-Options", "nosniff",
        "X-Frame-Options", "DENY",                "Referrer-Policy", "no-referrer",
        "Cross-Origin-Opener-Policy", "same-origin", "Cross-Origin-Resource-Policy", "same-origin",
        "Cache-Control", "no-cache",              NULL};
    size_t n = strlen(text);
    char *body = malloc(n + 1);
    if (!body) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    memcpy(body, text, n + 1);
    return api_respond_raw_headers(r, 200, body, n, type, headers);
}

int api_route_page(api_req_t *r) { return serve(r, api_page_html, "text/html; charset=utf-8"); }
int api_route_page_js(api_req_t *r) { return serve(r, api_page_js, "text/javascript; charset=utf-8"); }
int api_route_page_css(api_req_t *r) { return serve(r, api_page_css, "text/css; charset=utf-8"); }
