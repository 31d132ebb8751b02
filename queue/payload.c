/* queue/payload.c - the task payload codec (JSON through jansson) and task
 * signing (HMAC-SHA256 through OpenSSL libcrypto).
 *
 * The queue stores payloads as opaque bytes; these helpers give producers
 * and the serving side one agreed shape:
 *   {"model": "...", "op": "...", "inputs": <any JSON>,
 *    "request_id": "...", "traceparent": "..."}
 * The signature covers the task id and the payload, so a signed payload
 * copied under another id does not verify.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "queue/queue.h"

void queue_sign(const unsigned char *key, size_t key_len, const char *id, const char *payload, size_t payload_len,
                char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t idlen = strlen(id);
    unsigned char small[4096];
    size_t n = idlen + 1 + payload_len;
    unsigned char *buf = n <= sizeof small ? small : malloc(n);
    out[0] = 0;
    if (!buf) return; /* an empty signature never verifies: the task goes to the DLQ, not run */
    memcpy(buf, id, idlen);
    buf[idlen] = '\n';
    if (payload_len) memcpy(buf + idlen + 1, payload, payload_len);
    if (HMAC(EVP_sha256(), key, (int)key_len, buf, n, md, &mdlen) && mdlen == 32)
        for (unsigned i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    if (buf != small) free(buf);
}

char *queue_payload_build(const char *model, const char *op, const char *inputs_json, const char *request_id,
                          const char *traceparent, char *err, size_t errlen) {
    if (!model || !*model || !op || !*op) {
        snprintf(err, errlen, "task payload: model and op are required");
        return NULL;
    }
    json_error_t jerr;
    json_t *inputs = json_loads(inputs_json ? inputs_json : "null", JSON_DECODE_ANY, &jerr);
    if (!inputs) {
        snprintf(err, errlen, "task payload: inputs are not JSON: %s", jerr.text);
        return NULL;
    }
    json_t *o = json_object();
    char *s = NULL;
    if (!o || json_object_set_new(o, "model", json_string(model)) || json_object_set_new(o, "op", json_string(op)) ||
        json_object_set_new(o, "inputs", inputs) ||
        (request_id && json_object_set_new(o, "request_id", json_string(request_id))) ||
        (traceparent && json_object_set_new(o, "traceparent", json_string(traceparent)))) {
        snprintf(err, errlen, "task payload: out of memory or a field is not UTF-8");
        goto done;
    }
    s = json_dumps(o, JSON_COMPACT);
    if (!s) snprintf(err, errlen, "task payload: out of memory");
done:
    json_decref(o);
    return s;
}

static char *dup_field(json_t *o, const char *name, int required, int *bad) {
    json_t *v = json_object_get(o, name);
    if (!v) {
        if (required) *bad = 1;
        return NULL;
    }
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    char *s = strdup(json_string_value(v));
    if (!s) *bad = 1;
    return s;
}

void queue_sign_task(const unsigned char *key, size_t key_len, const queue_sign_fields_t *f, const char *payload,
                     size_t payload_len, char out[QUEUE_SIG_MAX]) {
    /* every covered field on its own line before the payload: no two tasks share the text */
    char head[QUEUE_NAME_MAX + QUEUE_ID_MAX + 160], mac[65];
    snprintf(head, sizeof head, "sluice-task-v2\n%s\n%s\n%d\n%d\n%lld\n%lld\n%lld", f->queue, f->id, f->priority,
             f->max_attempts, (long long)f->ttl_ms, (long long)f->delay_ms, (long long)f->signed_ms);
    queue_sign(key, key_len, head, payload, payload_len, mac);
    snprintf(out, QUEUE_SIG_MAX, "v2.%lld.%lld.%lld.%d.%s", (long long)f->signed_ms, (long long)f->delay_ms,
             (long long)f->ttl_ms, f->max_attempts, mac);
}

int queue_payload_parse(const char *json, size_t len, queue_payload_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    if (!o || !json_is_object(o)) {
        snprintf(err, errlen, "task payload: not a JSON object%s%s", o ? "" : ": ", o ? "" : jerr.text);
        json_decref(o);
        return QUEUE_EINVAL;
    }
    int bad = 0;
    out->model = dup_field(o, "model", 1, &bad);
    out->op = dup_field(o, "op", 1, &bad);
    out->request_id = dup_field(o, "request_id", 0, &bad);
    out->traceparent = dup_field(o, "traceparent", 0, &bad);
    json_t *inputs = json_object_get(o, "inputs");
    out->inputs_json = inputs ? json_dumps(inputs, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
    if (!out->inputs_json) bad = 1;
    json_decref(o);
    if (bad) {
        queue_payload_clear(out);
        snprintf(err, errlen, "task payload: model and op must be strings (request_id, traceparent too if given)");
        return QUEUE_EINVAL;
    }
    return 0;
}

void queue_payload_clear(queue_payload_t *p) {
    if (!p) return;
    free(p->model);
    free(p->op);
    free(p->inputs_json);
    free(p->request_id);
    free(p->traceparent);
    memset(p, 0, sizeof *p);
}
