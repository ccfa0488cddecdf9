/* sweep_file.h: a sweep's folder on disk (see sweep.h for what a sweep is).
 *
 *   DIR/results/I.result   experiment I's result (1-based, as the Lua list counts), written
 *                          atomically by whichever process ran it: one envelope table
 *                          { experiment = I, count = N, shards = S, launch = "...", result = {...} }
 *   DIR/results/I.log      what experiment I printed, when it ran in a process of its own
 *   DIR/sweep.csv, DIR/sweep.html   every experiment's row, in the order given
 *
 * A result file is a Lua value in a small text encoding read by C, never run as Lua: after the
 * line "runexp-sweep-result 1", a value is i<integer>; n<hex float>; s<length>:<bytes> b0 b1 or
 * t<pairs>{<key><value>...}, keys being integers or strings. Numbers keep every bit (hex floats),
 * integers stay integers, so a result read back equals the table runexp.train returned. */
#ifndef RUNEXP_SWEEP_FILE_H
#define RUNEXP_SWEEP_FILE_H

#include <lua.h>
#include <stdbool.h>
#include <stdio.h>

#include "error.h"

/* Where an experiment's result goes: DIR/results/I.result (or .log); false when too long. */
bool sweep_path(char *out, size_t len, const char *dir, int experiment, const char *ext);

/* Writes the value at idx (numbers, strings, booleans and tables of them) as a result file,
 * atomically. Returns 0, or -1 with the message in err. */
int sweep_write_value(lua_State *L, int idx, const char *path, char *err);
/* Reads a result file's value onto the stack. Returns 0, or -1 with the message in err (file
 * and byte) and nothing pushed; ENOENT stays in errno when the file is not there. Raises Lua's
 * memory error only when L's allocator refuses. */
int sweep_read_value(lua_State *L, const char *path, char *err);
/* Decodes len bytes of encoded text (named `name` in messages) onto the stack; as above. */
int sweep_decode(lua_State *L, const char *text, size_t len, const char *name, char *err);

/* Writes the result table at idx as experiment i's envelope (count experiments in all, in
 * `shards` shards, launched as `launch`: see sweep.h) into DIR/results/i.result. */
int sweep_write_result(lua_State *L, int idx, const char *dir, int i, int count, int shards, const char *launch,
                       char *err);
/* Reads experiment i's result table onto the stack: 0; 1 (nothing pushed) when the file is not
 * there yet, or is from another launch (a launch of "" accepts any); -1 with the message when
 * it is broken or from a sweep of another size. */
int sweep_read_result(lua_State *L, const char *dir, int i, int count, const char *launch, char *err);

/* Writes DIR/sweep.csv and DIR/sweep.html from the list of result tables at idx (n rows, a
 * missing row being nil). Returns 0, or -1 with the message in err. */
int sweep_write_reports(lua_State *L, int idx, int n, const char *dir, char *err);

/* `runexp merge DIR`: every DIR/results/I.result into DIR/sweep.csv and DIR/sweep.html;
 * missing experiments get a row that says so, and make it fail with their numbers and shards
 * after the files are written. Returns 0, or -1 with the message in err. */
int sweep_merge(const char *dir, FILE *log, char *err);

#endif
