/* config_diff.h: what changed between two resolved configs (the config.lua texts runexp writes),
 * key by key: "seed was 1, now 2; data.batch_size was 32, now 64". A resumed run goes on bit for
 * bit only with the config it started with, so resume asks this before it continues. */
#ifndef RUNEXP_CONFIG_DIFF_H
#define RUNEXP_CONFIG_DIFF_H

#include "files.h"

/* The changes from `was` to `now` (each a resolved config's text), in changes ("" when none),
 * leaving out the dotted keys listed in `allowed` (NULL-terminated). A text Lua cannot read is
 * an error naming `was_name` or `now_name`. */
int config_diff(const char *was, const char *was_name, const char *now, const char *now_name,
                const char *const *allowed, strbuf *changes, char *err);

#endif
