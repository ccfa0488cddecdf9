/* version.h: which runexp this is, for the records a run leaves (summary.json). */
#ifndef RUNEXP_VERSION_H
#define RUNEXP_VERSION_H

#define RUNEXP_VERSION "0.2.0"

/* The source revision the build was made from (`git describe --always --dirty`, which the
 * Makefile passes in when it builds in a git tree), or "unknown". */
const char *build_revision(void);

#endif
