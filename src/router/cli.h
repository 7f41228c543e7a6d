/*
 * cli.h - the classifier commands of the hybridgw command line:
 *
 *   hybridgw train --data FILE.jsonl [--data FILE2 ...] --out MODEL [options]
 *   hybridgw eval  --data FILE.jsonl [--model MODEL] [--min-confidence X] [--json]
 *
 * argv[0] is the command name ("train" / "eval"). They return the process
 * exit status: 0 success, 1 a failure while running (cannot write the
 * model, ...), 2 bad flags or bad input files (a bad JSONL line is reported
 * as file:line). See docs/classifier.md.
 */
#ifndef HYBRIDGW_ROUTER_CLI_H
#define HYBRIDGW_ROUTER_CLI_H

int gw_cmd_train(int argc, char **argv);
int gw_cmd_eval(int argc, char **argv);

#endif
