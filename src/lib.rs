pub fn hello() -> &'static str { "hi" }
use mlua::prelude::*;
#[mlua::lua_module(name = "sharedserver_native")]
fn native(lua: &Lua) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    t.set("version", lua.create_function(|_, ()| Ok(hello()))?)?;
    Ok(t)
}
