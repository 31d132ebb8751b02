/* api/cli/cli.h - the `sluice` command-line entry points, one per subcommand.
 *
 * Each takes the arguments after the subcommand name (argv[0] is the
 * subcommand) and returns the process exit code: 0 ok, 1 runtime failure,
 * 2 usage or input error (one clear line on stderr). Only main() exits.
 */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

int cli_embed(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_queue(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_expand(int argc, char **argv);
int cli_keys(int argc, char **argv);
int cli_generate(int argc, char **argv); /* api/cli/cli_generate.c */
int cli_chat(int argc, char **argv);     /* api/cli/cli_generate.c */

#endif
