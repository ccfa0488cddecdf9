/* schedule.h: the learning rate over training, lr times a factor of the step (README
 * "Schedules"): optim.schedule read from the config, or optim.lr given as a Lua function; the
 * factor at a step; and the schedule written back into the resolved config. */
#ifndef RUNEXP_SCHEDULE_H
#define RUNEXP_SCHEDULE_H

#include <stdint.h>

#include "files.h"

typedef struct lua_State lua_State;
typedef struct config config; /* config.h, which holds a schedule */

typedef enum { SCHED_CONSTANT, SCHED_STEP, SCHED_COSINE, SCHED_ONECYCLE, SCHED_FUNCTION } schedule_kind;

typedef struct schedule {
    schedule_kind kind;
    double warmup;             /* cosine, onecycle: share of all steps spent rising from start to 1 */
    double start, final;       /* the factor at the first and the last step */
    int64_t every;             /* step: epochs between decays */
    double gamma;              /* step: the factor each decay multiplies by */
    int ref;                   /* function: the Lua function's registry reference in config.L */
    char source[2048];         /* function: its source text, for the resolved config */
} schedule;

/* Reads optim.schedule, at the top of L's stack ("name" or {"name", key = value}), into
 * c->sched. On failure writes what is wrong ("schedule step: missing key 'every' (...)") to
 * msg (ERR_LEN bytes), for the caller to put the place in front, and returns -1. */
int schedule_read(config *c, lua_State *L, char *msg);
/* Makes the Lua function at the top of L's stack (optim.lr = function(step, steps)) c's
 * schedule: a registry reference in L, and its source text for the resolved config. */
void schedule_read_function(config *c, lua_State *L);
/* Back to the constant schedule, the reference to a schedule function in L dropped. */
void schedule_reset(schedule *s, lua_State *L);

/* The learning rate factor at step (0-based) of steps in all, epoch (1-based) of epochs; a Lua
 * schedule function that fails or returns something unusable gives -1 and a message. */
int config_lr_factor(const config *c, int64_t step, int64_t steps, int64_t epoch, double *factor, char *err);

/* optim's "lr = 0.1, schedule = { "step", every = 3, gamma = 0.5 }" in the resolved config, or
 * "lr = function ... end" for a schedule function. */
void schedule_to_lua(const config *c, strbuf *b);

#endif
