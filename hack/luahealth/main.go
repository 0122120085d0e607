// luahealth runs an Argo CD resource health check (Lua, in gopher-lua: the interpreter
// Argo CD embeds) on Kubernetes objects, as Argo CD does: the object is the global
// `obj`, the script returns a table {status = ..., message = ...}.
//
// Usage: luahealth SCRIPT.lua < objects.json (one object, a list, or {"items": [...]}).
// Output: one JSON line per object: {"name": ..., "status": ..., "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range x {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	}
	return lua.LString(fmt.Sprint(v))
}

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: luahealth SCRIPT.lua < objects.json"))
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var objs []map[string]interface{}
	var doc map[string]interface{}
	if err := json.Unmarshal(raw, &doc); err == nil {
		if items, ok := doc["items"].([]interface{}); ok {
			for _, it := range items {
				objs = append(objs, it.(map[string]interface{}))
			}
		} else {
			objs = append(objs, doc)
		}
	} else if err := json.Unmarshal(raw, &objs); err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, o := range objs {
		L := lua.NewState(lua.Options{SkipOpenLibs: false})
		L.SetGlobal("obj", toLua(L, o))
		if err := L.DoString(string(script)); err != nil {
			fail(err)
		}
		ret := L.Get(-1)
		t, ok := ret.(*lua.LTable)
		if !ok {
			fail(fmt.Errorf("the script returned %s, not a table", ret.Type()))
		}
		name := ""
		if meta, ok := o["metadata"].(map[string]interface{}); ok {
			name, _ = meta["name"].(string)
		}
		out := verdict{name, lua.LVAsString(t.RawGetString("status")), lua.LVAsString(t.RawGetString("message"))}
		if err := enc.Encode(out); err != nil {
			fail(err)
		}
		L.Close()
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "luahealth:", err)
	os.Exit(1)
}
