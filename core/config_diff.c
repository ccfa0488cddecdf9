/* config_diff.c: two resolved configs compared key by key (see config_diff.h).
 *
 * Both texts are evaluated as Lua (they are Lua: config.lua and the copy kept at the start) in
 * a small state of their own, with only the base, string and table libraries and a bound on the
 * instructions run, and their tables are flattened to dotted keys: a comparison of values, so
 * that a number written another way or keys in another order are no change. An lr function is
 * compared by its code. */
#include "config_diff.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

/* (was, now, allowed) -> the changes as one line, "" when none. */
static const char *differ =
    "local was, now, allowed = ...\n"
    "local function flat(t, prefix, out)\n"
    "  for k, v in pairs(t) do\n"
    "    local key = type(k) == 'number' and prefix .. '[' .. k .. ']' or (prefix == '' and k or prefix .. '.' .. k)\n"
    "    if type(v) == 'table' then flat(v, key, out)\n"
    "    elseif type(v) == 'function' then out[key] = 'a function: ' .. string.dump(v, true)\n"
    "    else out[key] = v end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local function show(v)\n"
    "  if v == nil then return 'unset' end\n"
    "  if type(v) == 'string' then return v:find('^a function: ') and 'a function' or string.format('%q', v) end\n"
    "  return tostring(v)\n"
    "end\n"
    "local a, b, lines = flat(was, '', {}), flat(now, '', {}), {}\n"
    "for k, v in pairs(a) do\n"
    "  if b[k] ~= v and not allowed[k] then\n"
    "    local other = type(b[k]) == 'string' and show(b[k]) == 'a function' and show(v) == 'a function'\n"
    "    lines[#lines + 1] = k .. ' was ' .. show(v) .. ', now ' .. (other and 'another function' or show(b[k]))\n"
    "  end\n"
    "end\n"
    "for k, v in pairs(b) do\n"
    "  if a[k] == nil and not allowed[k] then lines[#lines + 1] = k .. ' was unset, now ' .. show(v) end\n"
    "end\n"
    "table.sort(lines)\n"
    "return table.concat(lines, '; ')\n";

/* A resolved config is a few hundred instructions; anything near this bound is not one. */
#define DIFF_MAX_INSTRUCTIONS 10000000

static void too_long(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "it runs too long for a resolved config");
}

/* Evaluates text (named name) to the table it returns, left on the stack. */
static int push_config(lua_State *L, const char *text, const char *name, char *err)
{
    char chunk[64];
    snprintf(chunk, sizeof chunk, "=%s", name);
    if (luaL_loadbufferx(L, text, strlen(text), chunk, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        return errorf(err, "%s: cannot be read to compare it: %s", name, lua_tostring(L, -1));
    if (!lua_istable(L, -1)) return errorf(err, "%s: does not return a table, so it cannot be compared", name);
    return 0;
}

static void open_libs(lua_State *L)
{
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    lua_pop(L, 3);
}

int config_diff(const char *was, const char *was_name, const char *now, const char *now_name,
                const char *const *allowed, strbuf *changes, char *err)
{
    lua_State *L = luaL_newstate();
    if (!L) return errorf(err, "%s: out of memory comparing it with %s", now_name, was_name);
    open_libs(L);
    lua_sethook(L, too_long, LUA_MASKCOUNT, DIFF_MAX_INSTRUCTIONS);
    int rc = luaL_loadbufferx(L, differ, strlen(differ), "=config_diff", "t") == LUA_OK ? 0 : -1;
    if (rc != 0) errorf(err, "config_diff: %s", lua_tostring(L, -1));
    if (rc == 0) rc = push_config(L, was, was_name, err);
    if (rc == 0) rc = push_config(L, now, now_name, err);
    if (rc == 0) {
        lua_newtable(L);
        for (int i = 0; allowed[i]; i++) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, allowed[i]);
        }
        if (lua_pcall(L, 3, 1, 0) != LUA_OK) rc = errorf(err, "%s: cannot be compared: %s", now_name, lua_tostring(L, -1));
        else sb_printf(changes, "%s", lua_tostring(L, -1));
    }
    lua_close(L);
    return rc;
}
