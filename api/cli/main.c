/* api/cli/main.c - `sluice`: dispatch to the subcommand named by argv[1]. */
#include <stdio.h>
#include <string.h>
#include "api/cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command_t;

static const command_t commands[] = {
    {"embed", cli_embed, "print sentence embeddings as JSON lines"},
    {"tokenize", cli_tokenize, "print token ids and pieces"},
    {"queue", cli_queue, "Redis task queue: enqueue, get, cancel, stats, dlq"},
    {"serve", cli_serve, "serve embeddings over HTTP and Redis queues"},
    {"expand", cli_expand, "nearest terms of each term by embedding similarity"},
    {"keys", cli_keys, "API keys: add one (its hash goes to the key file)"},
    {"generate", cli_generate, "complete a prompt with a decoder model, streaming tokens"},
    {"chat", cli_chat, "chat with a decoder model (its chat template), streaming tokens"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: sluice COMMAND [options]   (sluice COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s' (try sluice --help)\n", argv[1]);
    return 2;
}
