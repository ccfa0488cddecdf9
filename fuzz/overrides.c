/* Fuzz target: command-line overrides. The input is up to 8 lines, each one "key=value"
 * argument, applied to a small valid experiment and then checked as the command line does
 * (config_from_table): the override parser, the Lua value typing, and the conversion into
 * plugin arguments. Everything must end in a message or a config, never a crash. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define BASE \
    "return { data = { 'synthetic', batch_size = 8, size = 4 }, model = { { 'conv2d', out = 2, kernel = 3, " \
    "padding = 1 }, { 'relu' }, { 'flatten' }, { 'dropout', p = 0.1 }, { 'linear', out = 3 } }, " \
    "loss = 'cross_entropy', optim = { 'sgd', lr = 0.1, momentum = 0.9 }, epochs = 1 }"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *args[8];
    int n = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && n < 8; line = strtok_r(NULL, "\n", &save))
        args[n++] = line;
    plugin_path path = { 0 };
    plugin_path_add(&path, FUZZ_PLUGIN_DIR);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, BASE) == LUA_OK) {
        config c;
        char err[ERR_LEN];
        config_from_table(&c, L, -1, &path, "fuzz.lua", n, args, err);
        config_free(&c);
    }
    lua_close(L);
    free(text);
    return 0;
}
