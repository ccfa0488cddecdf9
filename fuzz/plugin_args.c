/* Fuzz target: the conversion of a Lua table into plugin arguments. The input is the body of a
 * Lua table constructor (`return { <input> }`), evaluated with no globals and a bounded number
 * of instructions, then read as an experiment by config_from_table. Any table at all must end
 * in a message or a config, never a crash. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void stop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "too long");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 16);
    if (!text) return 0;
    memcpy(text, "return {", 8);
    memcpy(text + 8, data, size);
    memcpy(text + 8 + size, "\n}", 3);
    plugin_path path = { 0 };
    plugin_path_add(&path, FUZZ_PLUGIN_DIR);
    lua_State *L = luaL_newstate();
    if (luaL_loadbufferx(L, text, size + 10, "=fuzz", "t") == LUA_OK) {
        lua_newtable(L); /* an empty environment: constants and constructors only */
        lua_setupvalue(L, -2, 1);
        lua_sethook(L, stop, LUA_MASKCOUNT, 100000);
        if (lua_pcall(L, 0, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
            lua_sethook(L, NULL, 0, 0);
            config c;
            char err[ERR_LEN];
            config_from_table(&c, L, -1, &path, "fuzz.lua", 0, NULL, err);
            config_free(&c);
        }
    }
    lua_close(L);
    free(text);
    return 0;
}
