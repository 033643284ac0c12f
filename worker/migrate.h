/*
 * activity-worker: schema migrations.
 */

#ifndef ACTIVITY_MIGRATE_H
#define ACTIVITY_MIGRATE_H

#include "db.h"


/*
 * Apply every NNN_name.sql in dir not yet recorded in
 * activity_schema_migrations, in numeric order, each in its own
 * transaction, all under an advisory lock (several workers may start at
 * once). Prints what was applied on stdout. Returns 0 when the schema is
 * current, -1 on any failure (the failed file is rolled back).
 */
int migrate_run(db_t *db, const char *dir);

/*
 * Count the files in dir not yet applied. Returns the count (0: current),
 * or -1 when it cannot tell.
 */
int migrate_pending(db_t *db, const char *dir);


#endif /* ACTIVITY_MIGRATE_H */
