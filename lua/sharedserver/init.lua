-- require("sharedserver"): the public API, which lives in api.lua. This
-- entry point only comes first so that the modules after it load from the
-- bytecode build.lua compiled, when it is current (compiled.lua).
require("sharedserver.compiled").install()
return require("sharedserver.api")
