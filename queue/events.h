/* queue/events.h - task-end notifications of one or more queues.
 *
 * Every script that ends tasks publishes "<id> <state>" lines (one message
 * per call) on the channel {q}:events (docs/queue.md). A queue_events_t is
 * one Redis connection SUBSCRIBEd to the channels of the queues named, so a
 * process that waits on many tasks learns when they end from one socket
 * instead of asking Redis about each one.
 *
 * Pub/sub is at most once: a message sent while the connection is down is
 * lost, so a user re-checks what it waits for after each (re)open.
 *
 * Ownership: open returns a connection the caller closes. Not thread-safe:
 * one thread drives one queue_events_t.
 */
#ifndef SLUICE_QUEUE_EVENTS_H
#define SLUICE_QUEUE_EVENTS_H

#include <stddef.h>

typedef struct queue_events queue_events_t;

/* Connect to url (AUTH as it says) within connect_timeout_ms and subscribe to
 * the events of queues[0..n). NULL with a message in err. */
queue_events_t *queue_events_open(const char *url, const char *const *queues, int n, int connect_timeout_ms,
                                  char *err, size_t errlen);
/* Wait up to timeout_ms for one message: 1 with *queue (the index into the
 * queues given to open) and its text ("<id> <state>" lines) copied into buf
 * (cut at len - 1 bytes), 0 when none came, -1 when the connection broke
 * (close it and open again). */
int queue_events_next(queue_events_t *e, int timeout_ms, int *queue, char *buf, size_t len);
void queue_events_close(queue_events_t *e); /* NULL is a no-op */

#endif
