/* engine/device.h - the device models run on: one backend (ops), one arena
 * sized by the memory budget, and the workspace every model gets.
 *
 * The registry (engine/registry.h) keeps the catalog of models; this is the
 * part it runs them on. Every model's weights and workspace are carved from
 * the device's arena, so a model that does not fit is refused with the
 * numbers instead of running the device out of memory.
 *
 * Ownership: the device owns its ops and arena; models loaded on it must be
 * freed before device_destroy. Thread-safety: getters are safe from any
 * thread; the arena has its own lock.
 */
#ifndef SLUICE_DEVICE_H
#define SLUICE_DEVICE_H

#include <stddef.h>

#include "engine/arena.h"
#include "engine/engine.h"
#include "kernels/ops.h"

typedef struct {
    const char *device;   /* "auto", "cpu" or "cuda" */
    size_t budget;        /* bytes for the arena; 0: device_default_budget */
    int cpu_threads;      /* <= 0: one per core */
    const char *dtype;    /* cuda precision: "fp16" (NULL: the default), "bf16" or "fp32" */
    engine_opts_t engine; /* workspace per model (max batch tokens / sequences), runners, graphs */
} device_opts_t;

typedef struct device device_t;

/* The budget used when opts.budget is 0: 80% of free device memory on cuda;
 * on cpu min(2 GiB, half the host's RAM). */
size_t device_default_budget(ops_t *ops);

/* ENGINE_OK, or ENGINE_EINVAL (bad dtype), ENGINE_EDEVICE, ENGINE_ENOMEM with a message. */
int device_create(const device_opts_t *opts, device_t **out, char *err, size_t errlen);
void device_destroy(device_t *d); /* NULL is a no-op */

ops_t *device_ops(const device_t *d);
arena_t *device_arena(const device_t *d);
const engine_opts_t *device_engine_opts(const device_t *d);
const char *device_name(const device_t *d);      /* "cpu" or "cuda" */
const char *device_precision(const device_t *d); /* "fp32", "fp16" or "bf16" */
const char *device_note(const device_t *d);      /* why auto picked cpu, or "" */
size_t device_budget(const device_t *d);         /* bytes */
size_t device_used(const device_t *d);           /* bytes in live arena blocks */

#endif
