/*
 * activity-worker token: print a signed JWT for trying dashboards.
 *
 * A development aid (`make run` prints an admin token with it), kept in
 * the worker so that a deployment needs no other tool: it signs with the
 * same HS256 secret the module's activity_jwt_secret verifies. The
 * secret is better passed in ACTIVITY_JWT_SECRET than on the command
 * line, where other users can see it in the process list.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>

#include "token.h"


#define TOKEN_TTL_DEFAULT  "8h"
#define TOKEN_TTL_MAX      (366L * 24 * 3600)


typedef struct {
    const char  *sub;
    const char  *role;
    const char  *ttl;
    const char  *secret;
} token_args_t;


static int token_args(token_args_t *args, int argc, char **argv);
static int token_parse_ttl(const char *s, long *seconds);
static int token_sign(const token_args_t *args, long ttl);
static void token_usage(FILE *f);


int
token_main(int argc, char **argv)
{
    token_args_t  args;
    long          ttl;
    int           rc;

    rc = token_args(&args, argc, argv);
    if (rc >= 0) {
        return rc;
    }

    if (token_parse_ttl(args.ttl, &ttl) != 0) {
        fprintf(stderr, "activity-worker token: invalid value \"%s\" for"
                " --ttl: expected seconds or a number with s, m, h or d,"
                " at most 366d\n", args.ttl);
        return 2;
    }

    return token_sign(&args, ttl);
}


/*
 * Fill args from "--name value" / "--name=value" and the environment.
 * Returns -1 to go on, or an exit status (0 after --help, 2 on error).
 */
static int
token_args(token_args_t *args, int argc, char **argv)
{
    const char  **slot, *arg, *eq, *value;
    size_t        len;
    int           a;

    memset(args, 0, sizeof(*args));
    args->ttl = TOKEN_TTL_DEFAULT;
    args->secret = getenv("ACTIVITY_JWT_SECRET");

    for (a = 1; a < argc; a++) {
        arg = argv[a];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            token_usage(stdout);
            return 0;
        }

        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "activity-worker token: unexpected argument"
                    " \"%s\" (try --help)\n", arg);
            return 2;
        }

        arg += 2;
        eq = strchr(arg, '=');
        len = eq ? (size_t) (eq - arg) : strlen(arg);

        if (len == 3 && strncmp(arg, "sub", 3) == 0) {
            slot = &args->sub;
        } else if (len == 4 && strncmp(arg, "role", 4) == 0) {
            slot = &args->role;
        } else if (len == 3 && strncmp(arg, "ttl", 3) == 0) {
            slot = &args->ttl;
        } else if (len == 6 && strncmp(arg, "secret", 6) == 0) {
            slot = &args->secret;
        } else {
            fprintf(stderr, "activity-worker token: unknown option \"%s\""
                    " (try --help)\n", argv[a]);
            return 2;
        }

        if (eq != NULL) {
            value = eq + 1;
        } else if (a + 1 < argc) {
            value = argv[++a];
        } else {
            fprintf(stderr, "activity-worker token: option --%.*s needs a"
                    " value\n", (int) len, arg);
            return 2;
        }

        *slot = value;
    }

    if (args->sub == NULL || args->sub[0] == '\0'
        || args->role == NULL || args->role[0] == '\0')
    {
        fprintf(stderr, "activity-worker token: --sub and --role are"
                " required (try --help)\n");
        return 2;
    }

    if (args->secret == NULL || args->secret[0] == '\0') {
        fprintf(stderr, "activity-worker token: no secret: set"
                " ACTIVITY_JWT_SECRET or pass --secret\n");
        return 2;
    }

    return -1;
}


/* "3600", "45s", "30m", "8h", "7d": a positive whole number of seconds. */
static int
token_parse_ttl(const char *s, long *seconds)
{
    char  *end;
    long   n, unit;

    errno = 0;
    n = strtol(s, &end, 10);

    if (errno != 0 || end == s || n <= 0 || s[0] == '+' || s[0] == ' ') {
        return -1;
    }

    switch (*end) {
    case '\0':
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }

    if (*end != '\0' && end[1] != '\0') {
        return -1;
    }

    if (n > TOKEN_TTL_MAX / unit) {
        return -1;
    }

    *seconds = n * unit;
    return 0;
}


static int
token_sign(const token_args_t *args, long ttl)
{
    jwt_t   *jwt;
    char    *token;
    time_t   now;
    int      rc;

    now = time(NULL);
    token = NULL;

    if (jwt_new(&jwt) != 0) {
        fprintf(stderr, "activity-worker token: out of memory\n");
        return 1;
    }

    /* libjwt keeps its own copy of the key */
    rc = jwt_add_grant(jwt, "sub", args->sub)
         || jwt_add_grant(jwt, "role", args->role)
         || jwt_add_grant_int(jwt, "iat", (long) now)
         || jwt_add_grant_int(jwt, "exp", (long) now + ttl)
         || jwt_set_alg(jwt, JWT_ALG_HS256,
                        (const unsigned char *) args->secret,
                        (int) strlen(args->secret));

    if (rc == 0) {
        token = jwt_encode_str(jwt);
    }

    jwt_free(jwt);

    if (token == NULL) {
        fprintf(stderr, "activity-worker token: cannot sign the token\n");
        return 1;
    }

    printf("%s\n", token);
    free(token);

    if (fflush(stdout) != 0) {
        return 1;
    }

    return 0;
}


static void
token_usage(FILE *f)
{
    fprintf(f,
        "usage: activity-worker token --sub NAME --role ROLE [--ttl TTL]\n"
        "                             [--secret SECRET]\n"
        "\n"
        "Prints an HS256 JSON Web Token with the claims sub, role, iat\n"
        "and exp, for a dashboard to connect with.\n"
        "\n"
        "  --sub NAME        the subject (user id)\n"
        "  --role ROLE       the role claim, e.g. admin\n"
        "  --ttl TTL         lifetime: seconds, or 45s, 30m, 8h, 7d"
        " (default " TOKEN_TTL_DEFAULT ")\n"
        "  --secret SECRET   HMAC secret, the module's"
        " activity_jwt_secret;\n"
        "                    default: env ACTIVITY_JWT_SECRET (preferred:\n"
        "                    a flag shows in the process list)\n");
}
