/* version.c: the build's source revision (see version.h). The Makefile rebuilds this file alone
 * when the revision changes, so a stale one is never recorded. */
#include "version.h"

const char *build_revision(void)
{
#ifdef RX_REVISION
    return RX_REVISION;
#else
    return "unknown";
#endif
}
