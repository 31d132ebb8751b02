/* api/http/ratelimit.c - token buckets per key (see the header for the rules). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "api/http/ratelimit.h"

typedef struct {
    double rps, tps;        /* refill rates; 0: unlimited */
    double req, tok;        /* current levels */
    int64_t t_ns;           /* last refill */
} bucket_t;

struct api_ratelimit {
    pthread_mutex_t mu;
    bucket_t *b;
    int n;
};

int api_ratelimit_create(int n_buckets, api_ratelimit_t **out) {
    *out = NULL;
    api_ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl) return -1;
    rl->b = calloc((size_t)(n_buckets > 0 ? n_buckets : 1), sizeof *rl->b);
    if (!rl->b) {
        free(rl);
        return -1;
    }
    rl->n = n_buckets;
    pthread_mutex_init(&rl->mu, NULL);
    *out = rl;
    return 0;
}

void api_ratelimit_destroy(api_ratelimit_t *rl) {
    if (!rl) return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->b);
    free(rl);
}

static double req_cap(const bucket_t *b) { return b->rps > 1 ? b->rps : 1; }

void api_ratelimit_configure(api_ratelimit_t *rl, int i, double rps, double tokens_per_s) {
    if (!rl || i < 0 || i >= rl->n) return;
    pthread_mutex_lock(&rl->mu);
    bucket_t *b = &rl->b[i];
    b->rps = rps > 0 ? rps : 0;
    b->tps = tokens_per_s > 0 ? tokens_per_s : 0;
    b->req = req_cap(b); /* start full */
    b->tok = b->tps;
    b->t_ns = 0;
    pthread_mutex_unlock(&rl->mu);
}

static void refill(bucket_t *b, int64_t now) {
    if (b->t_ns == 0 || now < b->t_ns) {
        b->t_ns = now;
        return;
    }
    double dt = (now - b->t_ns) * 1e-9;
    b->t_ns = now;
    if (b->rps > 0) b->req = fmin(req_cap(b), b->req + dt * b->rps);
    if (b->tps > 0) b->tok = fmin(b->tps, b->tok + dt * b->tps);
}

static int ceil_s(double s) {
    if (!(s < 86400)) return 86400;
    int v = (int)ceil(s);
    return v < 1 ? 1 : v;
}

int api_ratelimit_take(api_ratelimit_t *rl, int i, int64_t now_ns, int *retry_after_s) {
    if (!rl || i < 0 || i >= rl->n) return API_RL_OK;
    int rc = API_RL_OK;
    pthread_mutex_lock(&rl->mu);
    bucket_t *b = &rl->b[i];
    refill(b, now_ns);
    if (b->tps > 0 && b->tok <= 0) {
        rc = API_RL_TOKENS;
        *retry_after_s = ceil_s((1e-9 - b->tok) / b->tps);
    } else if (b->rps > 0 && b->req < 1) {
        rc = API_RL_REQUESTS;
        *retry_after_s = ceil_s((1 - b->req) / b->rps);
    } else if (b->rps > 0) {
        b->req -= 1;
    }
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

void api_ratelimit_charge(api_ratelimit_t *rl, int i, int64_t now_ns, double tokens) {
    if (!rl || i < 0 || i >= rl->n || tokens <= 0) return;
    pthread_mutex_lock(&rl->mu);
    bucket_t *b = &rl->b[i];
    refill(b, now_ns);
    if (b->tps > 0) b->tok -= tokens;
    pthread_mutex_unlock(&rl->mu);
}
