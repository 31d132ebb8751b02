/* queue/cluster.c - hash slots, the CLUSTER SLOTS map, seeds and redirects
 * (see cluster.h). No I/O: conn.c asks Redis and hands the replies here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "queue/cluster.h"

uint16_t queue_crc16(const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++) crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned queue_key_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) return queue_crc16(open + 1, (size_t)(close - open - 1)) & 16383;
    }
    return queue_crc16(key, len) & 16383;
}

/* ---- slot map ---- */

void queue_slot_map_clear(queue_slot_map_t *m) {
    if (!m) return;
    free(m->ranges);
    free(m->nodes);
    memset(m, 0, sizeof *m);
}

/* Index of the node [host, port, ...] in m->nodes, added when new; -1 when
 * the entry is malformed or memory ran out. */
static int map_node(queue_slot_map_t *m, const redisReply *e, const char *asked_host) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    const char *host = e->element[0]->str;
    if (!host[0] || !strcmp(host, "?")) host = asked_host;
    long long port = e->element[1]->integer;
    if (port < 1 || port > 65535 || strlen(host) >= sizeof m->nodes[0].host) return -1;
    for (size_t i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && !strcmp(m->nodes[i].host, host)) return (int)i;
    queue_node_t *n = realloc(m->nodes, (m->nnodes + 1) * sizeof *n);
    if (!n) return -1;
    m->nodes = n;
    snprintf(n[m->nnodes].host, sizeof n->host, "%s", host);
    n[m->nnodes].port = (int)port;
    return (int)m->nnodes++;
}

int queue_slot_map_parse(const redisReply *r, const char *asked_host, queue_slot_map_t *m, char *err,
                         size_t errlen) {
    memset(m, 0, sizeof *m);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        return -1;
    }
    if (r->elements == 0) {
        snprintf(err, errlen, "CLUSTER SLOTS: no slot is assigned");
        return -1;
    }
    m->ranges = calloc(r->elements, sizeof *m->ranges);
    if (!m->ranges) goto nomem;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[0]->integer < 0 ||
            e->element[1]->integer >= QUEUE_CLUSTER_SLOTS || e->element[0]->integer > e->element[1]->integer) {
            snprintf(err, errlen, "CLUSTER SLOTS: malformed range %zu", i);
            goto fail;
        }
        int master = -1;
        for (size_t j = 2; j < e->elements; j++) {
            int k = map_node(m, e->element[j], asked_host);
            if (k < 0) {
                snprintf(err, errlen, "CLUSTER SLOTS: malformed node in range %zu", i);
                goto fail;
            }
            if (j == 2) master = k;
        }
        m->ranges[m->nranges++] = (queue_slot_range_t){(unsigned)e->element[0]->integer,
                                                       (unsigned)e->element[1]->integer, master};
    }
    return 0;
nomem:
    snprintf(err, errlen, "CLUSTER SLOTS: out of memory");
fail:
    queue_slot_map_clear(m);
    return -1;
}

const queue_node_t *queue_slot_map_owner(const queue_slot_map_t *m, unsigned slot) {
    for (size_t i = 0; i < m->nranges; i++)
        if (m->ranges[i].start <= slot && slot <= m->ranges[i].end) return &m->nodes[m->ranges[i].master];
    return NULL;
}

/* ---- redirects ---- */

int queue_redirect_parse(const char *err, queue_node_t *node) {
    int kind = !strncmp(err, "MOVED ", 6) ? QUEUE_REDIR_MOVED : !strncmp(err, "ASK ", 4) ? QUEUE_REDIR_ASK : 0;
    if (!kind) return QUEUE_REDIR_NONE;
    const char *p = strchr(err, ' ') + 1;
    char *e;
    long slot = strtol(p, &e, 10);
    if (e == p || *e != ' ' || slot < 0 || slot >= QUEUE_CLUSTER_SLOTS) return QUEUE_REDIR_NONE;
    const char *addr = e + 1;
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof node->host) return QUEUE_REDIR_NONE;
    long port = strtol(colon + 1, &e, 10);
    if (e == colon + 1 || *e || port < 1 || port > 65535) return QUEUE_REDIR_NONE;
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') addr++, hlen -= 2; /* [ipv6] */
    memcpy(node->host, addr, hlen);
    node->host[hlen] = 0;
    if (!hlen) return QUEUE_REDIR_NONE; /* Redis sends ":port" when it does not know the address */
    node->port = (int)port;
    return kind;
}

/* ---- seeds ---- */

/* Split url into scheme length, auth ("user:pw@" or ""), host list and
 * path ("/db" or ""). 0, or -1 for an unknown scheme. */
static int url_parts(const char *url, const char **hosts, size_t *hlen, size_t *alen, const char **path, int *cluster) {
    const char *p = url;
    *cluster = 0;
    if (!strncmp(p, "redis+cluster://", 16)) p += 16, *cluster = 1;
    else if (!strncmp(p, "redis://", 8)) p += 8;
    else if (strstr(p, "://")) return -1;
    const char *end = p + strcspn(p, "/?");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@') at = q; /* the last '@': passwords may hold one */
    *alen = at ? (size_t)(at + 1 - p) : 0;
    *hosts = p + *alen;
    *hlen = (size_t)(end - *hosts);
    *path = end;
    return 0;
}

int queue_seed_url(const char *url, size_t i, char *buf, size_t buflen) {
    const char *hosts, *path;
    size_t hlen, alen;
    int cluster;
    if (url_parts(url, &hosts, &hlen, &alen, &path, &cluster)) return -1;
    const char *item = hosts, *end = hosts + hlen;
    for (size_t k = 0; k < i; k++) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        if (!comma) return -1;
        item = comma + 1;
    }
    const char *comma = memchr(item, ',', (size_t)(end - item));
    size_t ilen = (size_t)((comma ? comma : end) - item);
    int n = snprintf(buf, buflen, "redis://%.*s%.*s%s", (int)alen, hosts - alen, (int)ilen, item, path);
    return n < 0 || (size_t)n >= buflen ? -1 : 0;
}

void queue_seeds_clear(queue_seeds_t *s) {
    if (!s) return;
    free(s->nodes);
    memset(s, 0, sizeof *s);
}

int queue_seeds_parse(const char *url, queue_seeds_t *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    const char *hosts, *path;
    size_t hlen, alen;
    int cluster;
    if (url_parts(url ? url : "", &hosts, &hlen, &alen, &path, &cluster)) {
        snprintf(err, errlen, "redis URL '%s': only redis:// and redis+cluster:// are supported", url);
        return QUEUE_EINVAL;
    }
    size_t n = 1;
    for (size_t i = 0; i < hlen; i++) n += hosts[i] == ',';
    s->nodes = calloc(n, sizeof *s->nodes);
    if (!s->nodes) {
        snprintf(err, errlen, "redis URL: out of memory");
        return QUEUE_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char one[1024];
        queue_url_t u;
        if (queue_seed_url(url, i, one, sizeof one)) {
            snprintf(err, errlen, "redis URL '%s': too long", url);
            goto fail;
        }
        const char *item = one + 8 + alen;
        if (!*item || *item == ',' || *item == '/') {
            snprintf(err, errlen, "redis URL '%s': empty host in the seed list", url);
            goto fail;
        }
        if (queue_url_parse(one, &u, err, errlen)) goto fail;
        if ((cluster || n > 1) && u.db) {
            snprintf(err, errlen, "redis URL '%s': a cluster has only database 0", url);
            goto fail;
        }
        snprintf(s->nodes[i].host, sizeof s->nodes[i].host, "%s", u.host);
        s->nodes[i].port = u.port;
    }
    s->n = n;
    s->cluster = cluster || n > 1;
    return 0;
fail:
    queue_seeds_clear(s);
    return QUEUE_EINVAL;
}
