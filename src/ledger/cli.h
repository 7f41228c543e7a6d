/*
 * cli.h - the spend store commands of the hybridgw command line:
 *
 *   hybridgw keys create|list|show|update|revoke|rotate|team-set|teams ...
 *   hybridgw spend --by key|team|model|tier|backend [--since 24h|7d|DATE] [--json]
 *
 * Every command takes --db URL (store.h URLs) or reads HYBRIDGW_DATABASE_URL.
 * argv[0] is the command name ("keys" / "spend"). They return the process
 * exit status: 0 success, 1 a database error or an unknown key, 2 bad
 * flags. Secrets are printed once, by create and rotate, and never again.
 * See docs/ledger.md.
 */
#ifndef HYBRIDGW_LEDGER_CLI_H
#define HYBRIDGW_LEDGER_CLI_H

int gw_cmd_keys(int argc, char **argv);
int gw_cmd_spend(int argc, char **argv);

#endif
