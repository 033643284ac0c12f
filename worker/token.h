/*
 * activity-worker token: print a signed JWT for trying dashboards.
 */

#ifndef ACTIVITY_TOKEN_H
#define ACTIVITY_TOKEN_H


/*
 * activity-worker token --sub NAME --role ROLE [--ttl TTL]
 *                       [--secret SECRET]
 *
 * argv[0] is "token". Prints an HS256 token with claims sub, role, iat
 * and exp on stdout. Returns the exit status: 0, 2 for bad usage, 1 when
 * signing fails.
 */
int token_main(int argc, char **argv);


#endif /* ACTIVITY_TOKEN_H */
